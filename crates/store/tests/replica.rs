//! The session group's replication format: a batch as bytes, the session trees whole.

mod util;

use shoal_session::OutboundState;
use shoal_store::WriteBatch;
use util::*;

#[test]
fn a_batch_reads_back_as_written_and_applies_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let mut batch = WriteBatch::new();
    batch.put_session(&session("c", 60, None)).expect("encodes");
    batch
        .enqueue(&id("c"), 7, &queued("c", 7, Some(9_000_000_000_000)))
        .expect("encodes");
    batch
        .enqueue(&id("c"), 8, &queued("c", 8, None))
        .expect("encodes");
    batch.set_outbound_state(&id("c"), 7, OutboundState::Sent(pid(3)));
    batch.put_receipt(&id("c"), pid(9));
    batch.remove_receipt(&id("c"), pid(3));
    batch.remove_subscription(&id("c"), &id("b"));
    batch.remove_outbound(&id("c"), 8);
    let bytes = batch.encode();
    let decoded = WriteBatch::decode(&bytes).expect("decodes");
    assert_eq!(decoded.encode(), bytes);
    store.apply(&decoded).expect("applies");
    let loaded = store.load_session(&id("c")).expect("loads");
    assert!(loaded.corrupt.is_empty());
    let record = &loaded.records[0];
    assert_eq!(record.subscriptions.len(), 1);
    assert!(record.incoming_qos2.contains(&pid(9)));
    let queue = store.load_queue(&id("c")).expect("loads").records;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].0, 7);
    assert_eq!(queue[0].1.state, OutboundState::Sent(pid(3)));
    // Every truncation and a bad version are errors, never a panic.
    for n in 1..bytes.len() {
        let _ = WriteBatch::decode(&bytes[..n]);
    }
    assert!(WriteBatch::decode(&[]).is_err());
    assert!(WriteBatch::decode(&[99]).is_err());
    assert!(
        store
            .load_session(&id("none"))
            .expect("loads")
            .records
            .is_empty()
    );
}

#[test]
fn exported_trees_replace_another_stores_sessions() {
    let a_dir = tempfile::tempdir().expect("temp dir");
    let b_dir = tempfile::tempdir().expect("temp dir");
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    a.put_session(&session("kept", 60, Some(1)))
        .expect("writes");
    a.enqueue(&id("kept"), 1, &queued("kept", 1, None))
        .expect("writes");
    b.put_session(&session("gone", 60, None)).expect("writes");
    b.import_sessions(&a.export_sessions(0, 1).expect("exports"), 0, 1)
        .expect("imports");
    let ids: Vec<String> = b
        .load_sessions()
        .expect("loads")
        .records
        .into_iter()
        .map(|s| s.client_id.to_string())
        .collect();
    assert_eq!(ids, vec!["kept".to_owned()]);
    assert_eq!(b.load_queue(&id("kept")).expect("loads").records.len(), 1);
}

#[test]
fn tagged_receipts_and_marks_replicate_and_a_release_removes_every_mark_of_its_tag() {
    use shoal_store::ReceiptTag;
    let a_dir = tempfile::tempdir().expect("temp dir");
    let b_dir = tempfile::tempdir().expect("temp dir");
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    let mut batch = WriteBatch::new();
    batch.put_session(&session("p", 60, None)).expect("encodes");
    let pending = ReceiptTag {
        tag: 7,
        done: false,
    };
    let done = ReceiptTag { tag: 8, done: true };
    batch.put_tagged_receipt(&id("p"), pid(1), pending);
    batch.put_tagged_receipt(&id("p"), pid(2), done);
    batch
        .put_mark(7, b"s1")
        .put_mark(7, b"\0g")
        .put_mark(8, b"s1");
    let bytes = batch.encode();
    let decoded = WriteBatch::decode(&bytes).expect("decodes");
    assert_eq!(decoded.encode(), bytes);
    a.apply(&decoded).expect("applies");
    // A receipt still pending is no duplicate yet: only the done one is loaded as a receipt.
    let record = &a.load_session(&id("p")).expect("loads").records[0];
    assert!(record.incoming_qos2.contains(&pid(2)));
    assert!(!record.incoming_qos2.contains(&pid(1)));
    let mut tags = a.load_tags(&id("p")).expect("loads");
    tags.sort_by_key(|(id, _)| *id);
    assert_eq!(tags, vec![(pid(1), pending), (pid(2), done)]);
    assert!(a.has_mark(7, b"s1").expect("reads"));
    assert!(!a.has_mark(7, b"s2").expect("reads"));
    // A snapshot carries the marks.
    b.import_sessions(&a.export_sessions(0, 1).expect("exports"), 0, 1)
        .expect("imports");
    assert!(b.has_mark(7, b"\0g").expect("reads"));
    let mut release = WriteBatch::new();
    release.release_tag(7);
    b.apply(&WriteBatch::decode(&release.encode()).expect("decodes"))
        .expect("applies");
    assert!(!b.has_mark(7, b"s1").expect("reads"));
    assert!(!b.has_mark(7, b"\0g").expect("reads"));
    assert!(
        b.has_mark(8, b"s1").expect("reads"),
        "another tag's mark stays"
    );
}

/// A snapshot of one session shard carries its clients' entries and the marks written
/// through it, and installing it leaves the other shards' entries as they were.
#[test]
fn a_shards_snapshot_replaces_that_shard_only() {
    use shoal_store::session_shard;
    const SHARDS: u16 = 3;
    let a_dir = tempfile::tempdir().expect("temp dir");
    let b_dir = tempfile::tempdir().expect("temp dir");
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    // Client ids of shard 0 and of another shard.
    let of = |prefix: &str, shard_wanted: bool| {
        (0..200)
            .map(|i| format!("{prefix}{i}"))
            .find(|c| (session_shard(c.as_bytes(), SHARDS) == 0) == shard_wanted)
            .expect("a client id")
    };
    let (zero, other, stale) = (of("c", true), of("c", false), of("s", true));
    let mut batch = WriteBatch::new();
    batch
        .put_session(&session(&zero, 60, Some(1)))
        .expect("encodes");
    batch
        .enqueue(&id(&zero), 1, &queued(&zero, 1, Some(9_000_000_000_000)))
        .expect("encodes");
    batch.put_mark(5, zero.as_bytes());
    for (shard, part) in batch.split(SHARDS) {
        assert_eq!(shard, 0);
        a.apply(&WriteBatch::decode(&part.encode()).expect("decodes"))
            .expect("applies");
    }
    // b holds an older session of shard 0 and one of the other shard.
    b.put_session(&session(&stale, 60, None)).expect("writes");
    let mut theirs = WriteBatch::new();
    theirs
        .put_session(&session(&other, 60, None))
        .expect("encodes");
    theirs.put_mark(6, other.as_bytes());
    for (_, part) in theirs.split(SHARDS) {
        b.apply(&part).expect("applies");
    }
    let exported = a.export_sessions(0, SHARDS).expect("exports");
    assert!(
        a.export_sessions(session_shard(other.as_bytes(), SHARDS), SHARDS)
            .expect("exports")
            .is_empty(),
        "a has nothing of the other shard"
    );
    b.import_sessions(&exported, 0, SHARDS).expect("imports");
    let mut ids: Vec<String> = b
        .load_sessions()
        .expect("loads")
        .records
        .into_iter()
        .map(|s| s.client_id.to_string())
        .collect();
    ids.sort();
    let mut want = vec![zero.clone(), other.clone()];
    want.sort();
    assert_eq!(ids, want, "shard 0 replaced, the other shard kept");
    assert_eq!(b.load_queue(&id(&zero)).expect("loads").records.len(), 1);
    assert!(b.has_mark(5, zero.as_bytes()).expect("reads"));
    assert!(b.has_mark(6, other.as_bytes()).expect("reads"));
}

/// A message queued and removed again within one run of writes is not written, and the
/// store ends as it would have without the skip: also when the run is applied again
/// after a crash that kept the first write of a partial application.
#[test]
fn a_message_queued_and_removed_in_one_run_is_skipped_and_the_run_ends_the_same() {
    let run = || {
        let mut a = WriteBatch::new();
        a.fence(&id("s"), 4);
        a.enqueue(&id("s"), 1, &queued("s", 1, Some(9_000_000_000_000)))
            .expect("encodes");
        a.enqueue(&id("s"), 2, &queued("s", 2, None))
            .expect("encodes");
        let mut b = WriteBatch::new();
        b.fence(&id("s"), 4);
        b.set_outbound_state(&id("s"), 1, OutboundState::Sent(pid(1)));
        b.set_outbound_state(&id("s"), 2, OutboundState::Sent(pid(2)));
        b.remove_outbound(&id("s"), 1);
        vec![a, b]
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = open(dir.path());
    for batch in run() {
        plain.apply(&batch).expect("applies");
    }
    let skipped_dir = tempfile::tempdir().expect("temp dir");
    let skipped = open(skipped_dir.path());
    let mut batches = run();
    assert_eq!(shoal_store::skip_delivered(&mut batches), 1);
    assert_eq!(
        batches.iter().map(WriteBatch::len).sum::<usize>(),
        3,
        "message 1's enqueue and state go, its removal stays"
    );
    // A partial application before a crash wrote message 1; the run again removes it.
    skipped
        .enqueue(&id("s"), 1, &queued("s", 1, Some(9_000_000_000_000)))
        .expect("writes");
    for batch in &batches {
        skipped.apply(batch).expect("applies");
    }
    for store in [&plain, &skipped] {
        let queue = store.load_queue(&id("s")).expect("loads").records;
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].0, 2);
        assert_eq!(queue[0].1.state, OutboundState::Sent(pid(2)));
        assert_eq!(store.export_sessions(0, 1).expect("exports").len(), 2);
    }
}

/// Writes from two owner epochs of a client are left alone: the older one's command may be
/// refused, and must not take the newer one's write with it.
#[test]
fn writes_of_two_owner_epochs_are_not_skipped_together() {
    let mut a = WriteBatch::new();
    a.fence(&id("s"), 4);
    a.enqueue(&id("s"), 1, &queued("s", 1, None))
        .expect("encodes");
    let mut b = WriteBatch::new();
    b.fence(&id("s"), 5);
    b.remove_outbound(&id("s"), 1);
    let mut batches = vec![a, b];
    assert_eq!(shoal_store::skip_delivered(&mut batches), 0);
    assert_eq!(batches[0].len(), 1);
    // A number written twice in a run is left alone too.
    let mut c = WriteBatch::new();
    c.enqueue(&id("s"), 1, &queued("s", 1, None))
        .expect("encodes");
    c.remove_outbound(&id("s"), 1);
    c.enqueue(&id("s"), 1, &queued("s", 1, None))
        .expect("encodes");
    let mut batches = vec![c];
    assert_eq!(shoal_store::skip_delivered(&mut batches), 0);
    assert_eq!(batches[0].len(), 3);
}
