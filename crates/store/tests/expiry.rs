//! Expiry: sessions, queued and retained messages removed once their time has passed,
//! through the index, and only those.

mod util;

use shoal_session::Timestamp;
use shoal_store::ExpiredReport;

use util::{id, message, open, queued, session};

const ALL: usize = usize::MAX;

#[test]
fn an_expired_session_goes_with_its_queue_and_nothing_else_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    // Disconnected at 1 s with a 10 s expiry: expires at 11 s.
    store
        .put_session(&session("c", 10, Some(1_000)))
        .expect("put");
    store
        .put_session(&session("connected", 10, None))
        .expect("put");
    store
        .put_session(&session("forever", u32::MAX, Some(1_000)))
        .expect("put");
    for seq in 0..3 {
        store
            .enqueue(&id("c"), seq, &queued("c", seq, None))
            .expect("enqueue");
    }
    store.flush_blocking().expect("flush");
    drop(store);

    // The index survives a reopen.
    let store = open(dir.path());
    assert!(
        store
            .remove_expired(Timestamp(10_999), ALL)
            .expect("pass")
            .is_empty()
    );
    let report = store.remove_expired(Timestamp(11_000), ALL).expect("pass");
    assert_eq!(
        report,
        ExpiredReport {
            sessions: vec![id("c")],
            session_messages: 3,
            ..ExpiredReport::default()
        }
    );
    let left: Vec<_> = store
        .load_sessions()
        .expect("load")
        .records
        .into_iter()
        .map(|s| s.client_id)
        .collect();
    assert_eq!(left, [id("connected"), id("forever")]);
    assert!(store.load_queue(&id("c")).expect("load").records.is_empty());
    assert!(
        store
            .remove_expired(Timestamp(u64::MAX), ALL)
            .expect("pass")
            .is_empty(),
        "nothing left in the index"
    );
}

#[test]
fn a_reconnect_takes_the_session_out_of_the_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    store
        .put_session(&session("c", 10, Some(1_000)))
        .expect("disconnected");
    store
        .put_session(&session("c", 10, None))
        .expect("reconnected");
    store
        .put_session(&session("c", 10, Some(50_000)))
        .expect("disconnected again");
    assert!(
        store
            .remove_expired(Timestamp(59_999), ALL)
            .expect("pass")
            .is_empty(),
        "the old entry went with the old record"
    );
    let report = store.remove_expired(Timestamp(60_000), ALL).expect("pass");
    assert_eq!(report.sessions, [id("c")]);
    assert_eq!(report.stale_entries, 0);
}

#[test]
fn expired_queued_and_retained_messages_are_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    store
        .enqueue(&c, 1, &queued("c", 1, Some(5_000)))
        .expect("enqueue");
    store
        .enqueue(&c, 2, &queued("c", 2, None))
        .expect("enqueue");
    store
        .enqueue(&c, 3, &queued("c", 3, Some(9_000)))
        .expect("enqueue");
    store
        .put_retained(&message("r/1", b"1", Some(5_000)))
        .expect("put");
    store
        .put_retained(&message("r/2", b"2", Some(9_000)))
        .expect("put");
    store
        .put_retained(&message("r/3", b"3", None))
        .expect("put");

    let report = store.remove_expired(Timestamp(5_000), ALL).expect("pass");
    assert_eq!(
        report,
        ExpiredReport {
            messages: vec![(c.clone(), 1)],
            retained: vec![id("r/1")],
            ..ExpiredReport::default()
        }
    );
    let seqs: Vec<_> = store
        .load_queue(&c)
        .expect("load")
        .records
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs, [2, 3]);
    let topics: Vec<_> = store
        .load_retained()
        .expect("load")
        .records
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(topics, [id("r/2"), id("r/3")]);
}

#[test]
fn replacing_or_removing_a_record_moves_or_drops_its_index_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    store
        .put_retained(&message("r", b"old", Some(5_000)))
        .expect("put");
    store
        .put_retained(&message("r", b"new", Some(9_000)))
        .expect("replace");
    store
        .enqueue(&id("c"), 1, &queued("c", 1, Some(5_000)))
        .expect("enqueue");
    store.remove_outbound(&id("c"), 1).expect("remove");
    store
        .enqueue(&id("c"), 2, &queued("c", 2, Some(5_000)))
        .expect("enqueue");
    store
        .remove_session(&id("c"))
        .expect("remove with its queue");

    assert!(
        store
            .remove_expired(Timestamp(8_999), ALL)
            .expect("pass")
            .is_empty(),
        "no stale entries either"
    );
    let report = store.remove_expired(Timestamp(9_000), ALL).expect("pass");
    assert_eq!(report.retained, [id("r")]);
    assert_eq!(report.stale_entries, 0);
}

#[test]
fn a_limit_bounds_each_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    for i in 0..10 {
        store
            .put_retained(&message(&format!("r/{i}"), b"x", Some(1_000 + i)))
            .expect("put");
    }
    let counts: Vec<_> = (0..3)
        .map(|_| {
            let report = store.remove_expired(Timestamp(2_000), 4).expect("pass");
            (report.retained.len(), report.more)
        })
        .collect();
    assert_eq!(counts, [(4, true), (4, true), (2, false)]);
}

#[test]
fn an_index_entry_left_without_its_record_is_dropped_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    store
        .put_retained(&message("r", b"x", Some(5_000)))
        .expect("put");
    store.flush_blocking().expect("flush");
    drop(store);

    // What a crash between the index write and the record write leaves.
    {
        let db = util::raw_sled(dir.path());
        db.open_tree("retained")
            .expect("tree")
            .remove("r")
            .expect("remove");
        db.open_tree("expiry")
            .expect("tree")
            .insert(&[0, 0, 0, 0, 0, 0, 0, 1, 9][..], &[][..])
            .expect("insert");
        db.flush().expect("flush");
    }

    let store = open(dir.path());
    let report = store.remove_expired(Timestamp(5_000), ALL).expect("pass");
    assert_eq!(report.stale_entries, 1);
    assert!(report.retained.is_empty());
    assert_eq!(
        report.corrupt.len(),
        1,
        "the malformed entry is reported: {report:?}"
    );
    assert_eq!(report.corrupt[0].tree, "expiry");
    assert!(
        store
            .remove_expired(Timestamp(u64::MAX), ALL)
            .expect("pass")
            .is_empty(),
        "both are gone"
    );
}

/// A session shard's expiry removes what expired of its own clients only: the other
/// shard's wait for their own leader's word.
#[test]
fn a_shards_expiry_removes_its_own_clients_only() {
    use shoal_store::session_shard;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let of = |shard: u16| {
        (0..200)
            .map(|i| format!("c{i}"))
            .find(|c| session_shard(c.as_bytes(), 2) == shard)
            .expect("a client id")
    };
    let (zero, one) = (of(0), of(1));
    for client in [&zero, &one] {
        store
            .put_session(&session(client, 10, Some(1_000)))
            .expect("put");
        store
            .enqueue(&id(client), 0, &queued(client, 0, None))
            .expect("enqueue");
    }
    let at = Timestamp(11_000);
    assert!(
        !store
            .has_expired_in_shard(Timestamp(10_999), 0, 2)
            .expect("reads")
    );
    assert!(store.has_expired_in_shard(at, 0, 2).expect("reads"));
    let report = store.remove_expired_in_shard(at, ALL, 0, 2).expect("pass");
    assert_eq!(report.sessions, vec![id(&zero)]);
    assert!(!store.has_expired_in_shard(at, 0, 2).expect("reads"));
    assert!(store.has_expired_in_shard(at, 1, 2).expect("reads"));
    assert!(
        store
            .load_session(&id(&zero))
            .expect("loads")
            .records
            .is_empty()
    );
    assert_eq!(
        store.load_session(&id(&one)).expect("loads").records.len(),
        1
    );
    let report = store.remove_expired_in_shard(at, ALL, 1, 2).expect("pass");
    assert_eq!(report.sessions, vec![id(&one)]);
}
