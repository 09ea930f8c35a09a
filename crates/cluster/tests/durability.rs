//! The log store waits for the node store's flush (group commit) before it reports an
//! append flushed or a vote saved: nothing rests on sled's background flush.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use shoal_cluster::{Command, GroupConfig, GroupId, RouteChange, SledLogStore};
use shoal_store::{Store, StoreConfig};

fn entry(index: u64) -> Entry<GroupConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Routes {
            node: 1,
            changes: vec![RouteChange {
                filter: "t/#".into(),
                present: true,
            }],
        }),
    }
}

#[tokio::test]
async fn append_and_vote_are_reported_only_after_a_store_flush() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // StoreConfig's default has sled's background flush off, so only explicit flushes
    // count here.
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut log = SledLogStore::open(&store, GroupId::Routes(0))?;

    let before = store.flush_stats().flushes;
    log.blocking_append([entry(1), entry(2)]).await?;
    let after_append = store.flush_stats().flushes;
    assert!(after_append > before, "append completed without a flush");

    log.save_vote(&Vote::new(1, 1)).await?;
    let after_vote = store.flush_stats().flushes;
    assert!(after_vote > after_append, "vote saved without a flush");

    // The committed index is written without a flush of its own.
    log.save_committed(Some(entry(2).log_id)).await?;
    assert_eq!(store.flush_stats().flushes, after_vote);
    Ok(())
}
