//! A group's log, vote and applied state are found back after the store is closed and
//! the same folder reopened; groups sharing the database do not see each other's data.

use std::collections::BTreeSet;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, Vote};
use std::sync::Arc;

use shoal_cluster::{
    Command, GroupConfig, GroupId, NoObserver, RaftNodeId, Response, RouteChange, SledLogStore,
    SledStateMachine,
};
use shoal_store::{Store, StoreConfig};

fn log_id(term: u64, index: u64) -> LogId<RaftNodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entries() -> Vec<Entry<GroupConfig>> {
    let route = |filter: &str, node, present| Command::Routes {
        node,
        changes: vec![RouteChange {
            filter: filter.into(),
            present,
        }],
    };
    let add = |filter: &str, node| route(filter, node, true);
    vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                None,
            )),
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Normal(add("a/+", 1)),
        },
        Entry {
            log_id: log_id(1, 3),
            payload: EntryPayload::Normal(add("a/+", 2)),
        },
        Entry {
            log_id: log_id(2, 4),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 5),
            payload: EntryPayload::Normal(route("a/+", 1, false)),
        },
        Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Normal(add("b/#", 3)),
        },
    ]
}

#[tokio::test]
async fn log_vote_and_applied_routes_survive_reopening_the_folder() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let group = GroupId::Routes(0);
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        let mut log = SledLogStore::open(&store, group)?;
        let mut state_machine = SledStateMachine::open(&store, group, 1, Arc::new(NoObserver))?;
        log.save_vote(&Vote::new(2, 1)).await?;
        log.blocking_append(entries()).await?;
        log.save_committed(Some(log_id(2, 6))).await?;
        let responses = state_machine.apply(entries()).await?;
        assert!(responses.iter().all(|r| *r == Response::Done));
        // The applied state is written without its own flush; the next flush of the
        // node's store (a later append's, or shutdown's) covers it.
        store.flush().await?;
    }

    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut log = SledLogStore::open(&store, group)?;
    let mut state_machine = SledStateMachine::open(&store, group, 1, Arc::new(NoObserver))?;

    assert_eq!(log.read_vote().await?, Some(Vote::new(2, 1)));
    assert_eq!(log.read_committed().await?, Some(log_id(2, 6)));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_log_id, Some(log_id(2, 6)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(log.try_get_log_entries(..).await?, entries());
    assert_eq!(log.try_get_log_entries(2..4).await?, entries()[1..3]);

    let (applied, membership) = state_machine.applied_state().await?;
    assert_eq!(applied, Some(log_id(2, 6)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    let routes: Vec<(String, Vec<u64>)> = state_machine
        .state()
        .routes()
        .map(|(filter, nodes)| (filter.to_owned(), nodes.iter().copied().collect()))
        .collect();
    assert_eq!(
        routes,
        [("a/+".to_owned(), vec![2]), ("b/#".to_owned(), vec![3])]
    );

    // Another group of the same database starts empty.
    let mut other_log = SledLogStore::open(&store, GroupId::Routes(1))?;
    let mut other_machine =
        SledStateMachine::open(&store, GroupId::Routes(1), 1, Arc::new(NoObserver))?;
    assert_eq!(other_log.get_log_state().await?.last_log_id, None);
    assert_eq!(other_log.read_vote().await?, None);
    assert_eq!(other_machine.state().routes().count(), 0);
    assert_eq!(other_machine.applied_state().await?.0, None);
    Ok(())
}

#[tokio::test]
async fn purge_and_truncate_survive_reopening_the_folder() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let group = GroupId::Meta;
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        let mut log = SledLogStore::open(&store, group)?;
        log.blocking_append(entries()).await?;
        log.purge(log_id(1, 2)).await?;
        // Truncation flushes, and so covers the purge written before it.
        log.truncate(log_id(2, 5)).await?;
    }
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut log = SledLogStore::open(&store, group)?;
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 4)));
    assert_eq!(log.try_get_log_entries(..).await?, entries()[2..4]);
    Ok(())
}
