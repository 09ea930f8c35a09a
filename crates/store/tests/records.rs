//! Sessions, queues and retained messages written, the store closed and reopened, and
//! read back the same.

mod util;

use shoal_session::{Message, OutboundState};
use shoal_store::{DecodeRecordError, RecordKey, StoreError, WriteBatch};

use util::{id, message, open, outbound, pid, queued, session};

#[test]
fn sessions_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    store.put_session(&session("b", 60, None)).expect("put");
    store.put_session(&session("a", 60, Some(5))).expect("put");
    store.put_session(&session("gone", 60, None)).expect("put");
    store
        .put_session(&session("a", 120, None))
        .expect("replace");
    assert_eq!(store.remove_session(&id("gone")).expect("remove"), 0);
    store.flush_blocking().expect("flush");
    drop(store);

    let store = open(dir.path());
    let loaded = store.load_sessions().expect("load");
    assert_eq!(
        loaded.strict().expect("nothing corrupt"),
        [session("a", 120, None), session("b", 60, None)]
    );
}

#[test]
fn a_queue_survives_a_reopen_in_sequence_order_with_its_states() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    // Out of order, and across a byte boundary of the sequence number.
    for seq in [256, 1, 2, 255, 3] {
        store
            .enqueue(&c, seq, &queued("c", seq, None))
            .expect("enqueue");
    }
    assert!(
        store
            .set_outbound_state(&c, 1, OutboundState::Sent(pid(10)))
            .expect("set")
    );
    assert!(
        store
            .set_outbound_state(&c, 2, OutboundState::Sent(pid(11)))
            .expect("set")
    );
    assert!(
        store
            .set_outbound_state(&c, 2, OutboundState::Released(pid(11)))
            .expect("set")
    );
    assert!(store.remove_outbound(&c, 3).expect("remove"));
    assert!(!store.remove_outbound(&c, 3).expect("remove again"));
    assert!(
        !store
            .set_outbound_state(&c, 3, OutboundState::Sent(pid(1)))
            .expect("set"),
        "nothing at 3"
    );
    store.flush_blocking().expect("flush");
    drop(store);

    let store = open(dir.path());
    let queue = store
        .load_queue(&c)
        .expect("load")
        .strict()
        .expect("nothing corrupt");
    let mut expected: Vec<_> = [1, 2, 255, 256]
        .into_iter()
        .map(|seq| (seq, queued("c", seq, None)))
        .collect();
    expected[0].1.state = OutboundState::Sent(pid(10));
    expected[1].1.state = OutboundState::Released(pid(11));
    assert_eq!(queue, expected);
}

#[test]
fn a_state_set_back_to_queued_overrides_the_state_written_with_the_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    store
        .enqueue(
            &c,
            1,
            &outbound(message("t", b"x", None), OutboundState::Sent(pid(4))),
        )
        .expect("enqueue");
    store
        .set_outbound_state(&c, 1, OutboundState::Queued)
        .expect("set");
    let queue = store
        .load_queue(&c)
        .expect("load")
        .strict()
        .expect("nothing corrupt");
    assert_eq!(queue[0].1.state, OutboundState::Queued);
}

#[test]
fn enqueueing_over_a_sequence_number_drops_the_old_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    store
        .enqueue(&c, 1, &queued("c", 1, None))
        .expect("enqueue");
    store
        .set_outbound_state(&c, 1, OutboundState::Released(pid(2)))
        .expect("set");
    let replacement = queued("c", 100, None);
    store.enqueue(&c, 1, &replacement).expect("enqueue again");
    let queue = store
        .load_queue(&c)
        .expect("load")
        .strict()
        .expect("nothing corrupt");
    assert_eq!(queue, [(1, replacement)]);
}

#[test]
fn queues_of_client_ids_that_prefix_each_other_stay_apart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let clients = ["a", "ab", "", "b", "a\u{1}"];
    for seq in 0..3 {
        for client in clients {
            store
                .enqueue(&id(client), seq, &queued(client, seq, None))
                .expect("enqueue");
        }
    }
    for client in clients {
        let queue = store
            .load_queue(&id(client))
            .expect("load")
            .strict()
            .expect("nothing corrupt");
        let expected: Vec<_> = (0..3).map(|seq| (seq, queued(client, seq, None))).collect();
        assert_eq!(queue, expected, "queue of {client:?}");
    }

    assert_eq!(store.remove_session(&id("a")).expect("remove"), 3);
    assert!(store.load_queue(&id("a")).expect("load").records.is_empty());
    assert_eq!(
        store.load_queue(&id("ab")).expect("load").records.len(),
        3,
        "\"ab\" keeps its queue"
    );
    assert_eq!(
        store.load_queue(&id("a\u{1}")).expect("load").records.len(),
        3
    );
}

#[test]
fn removing_a_session_removes_its_queue_and_states() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    store.put_session(&session("c", 60, None)).expect("put");
    store.put_session(&session("other", 60, None)).expect("put");
    for seq in 0..5 {
        store
            .enqueue(&c, seq, &queued("c", seq, None))
            .expect("enqueue");
        store
            .set_outbound_state(&c, seq, OutboundState::Sent(pid(1)))
            .expect("set");
    }
    store
        .enqueue(&id("other"), 0, &queued("other", 0, None))
        .expect("enqueue");

    assert_eq!(store.remove_session(&c).expect("remove"), 5);
    store.flush_blocking().expect("flush");
    drop(store);

    let store = open(dir.path());
    assert!(store.load_queue(&c).expect("load").records.is_empty());
    let sessions = store
        .load_sessions()
        .expect("load")
        .strict()
        .expect("nothing corrupt");
    assert_eq!(sessions, [session("other", 60, None)]);
    assert_eq!(
        store.load_queue(&id("other")).expect("load").records.len(),
        1
    );
}

#[test]
fn retained_messages_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let retained = |topic: &str, payload: &[u8]| {
        let mut m = message(topic, payload, None);
        m.retain = true;
        store.put_retained(&m).expect("put");
        m
    };
    let _old = retained("s/1", b"old");
    let one = retained("s/1", b"new");
    let two = retained("s/2", b"two");
    let _gone = retained("s/3", b"three");
    assert!(store.remove_retained(&id("s/3")).expect("remove"));
    assert!(!store.remove_retained(&id("s/3")).expect("remove again"));
    store.flush_blocking().expect("flush");
    drop(store);

    let store = open(dir.path());
    let loaded = store
        .load_retained()
        .expect("load")
        .strict()
        .expect("nothing corrupt");
    assert_eq!(loaded, [one, two]);
}

#[test]
fn a_batch_applies_its_writes_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    let retained = message("r", b"kept", None);
    let mut batch = WriteBatch::new();
    batch
        .put_session(&session("c", 60, None))
        .expect("encodes")
        .put_session(&session("d", 60, None))
        .expect("encodes")
        .enqueue(&c, 1, &queued("c", 1, None))
        .expect("encodes")
        .enqueue(&c, 2, &queued("c", 2, None))
        .expect("encodes")
        .set_outbound_state(&c, 2, OutboundState::Sent(pid(9)))
        .remove_outbound(&c, 1)
        .remove_session(&id("d"))
        .put_retained(&retained)
        .expect("encodes")
        .put_retained(&message("gone", b"", None))
        .expect("encodes")
        .remove_retained(&id("gone"));
    assert_eq!(batch.len(), 10);
    store.apply(&batch).expect("applies");
    store.flush_blocking().expect("flush");
    drop(store);

    let store = open(dir.path());
    assert_eq!(
        store.load_sessions().expect("load").strict().expect("ok"),
        [session("c", 60, None)]
    );
    let mut second = queued("c", 2, None);
    second.state = OutboundState::Sent(pid(9));
    assert_eq!(
        store.load_queue(&c).expect("load").strict().expect("ok"),
        [(2, second)]
    );
    assert_eq!(
        store.load_retained().expect("load").strict().expect("ok"),
        [retained]
    );
}

#[test]
fn a_message_without_a_topic_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let mut m: Message = message("t", b"x", None);
    m.topic = id("");
    assert!(matches!(
        store.put_retained(&m),
        Err(StoreError::Encode { .. })
    ));
    assert!(matches!(
        WriteBatch::new().put_retained(&m),
        Err(StoreError::Encode { .. })
    ));
    assert!(store.load_retained().expect("load").records.is_empty());
}

#[test]
fn corrupt_records_are_reported_with_their_tree_and_key_and_left_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let good = message("good", b"x", None);
    store.put_retained(&good).expect("put");
    store.put_session(&session("good", 60, None)).expect("put");
    store
        .enqueue(&id("c"), 1, &queued("c", 1, None))
        .expect("enqueue");
    store
        .enqueue(&id("c"), 3, &queued("c", 3, None))
        .expect("enqueue");
    store.flush_blocking().expect("flush");
    drop(store);

    // Bytes that this version did not write, put there behind the store's back.
    {
        let db = util::raw_sled(dir.path());
        db.open_tree("retained")
            .expect("tree")
            .insert("bad", &[1, 0xFF][..])
            .expect("insert");
        db.open_tree("sessions")
            .expect("tree")
            .insert("bad", &[7][..])
            .expect("insert");
        let queues = db.open_tree("queues").expect("tree");
        queues
            .insert(&[0, 1, b'c', 0, 0, 0, 0, 0, 0, 0, 2][..], &[1][..])
            .expect("insert");
        queues
            .insert(&[0, 1, b'c', 9][..], &[1][..])
            .expect("insert");
        db.flush().expect("flush");
    }

    let store = open(dir.path());
    let retained = store.load_retained().expect("load");
    assert_eq!(retained.records, [good]);
    assert_eq!(retained.corrupt.len(), 1);
    assert_eq!(retained.corrupt[0].tree, "retained");
    assert_eq!(retained.corrupt[0].key, RecordKey(b"bad".to_vec()));
    assert_eq!(
        retained.corrupt[0].to_string(),
        "corrupt record in tree `retained` at key \"bad\": invalid message flags: 255"
    );

    let sessions = store.load_sessions().expect("load");
    assert_eq!(sessions.records.len(), 1);
    assert_eq!(
        sessions.corrupt[0].source,
        DecodeRecordError::UnsupportedVersion(7)
    );
    assert!(matches!(sessions.strict(), Err(StoreError::Corrupt(c)) if c.tree == "sessions"));

    let queue = store.load_queue(&id("c")).expect("load");
    assert_eq!(
        queue
            .records
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        [1, 3]
    );
    let errors: Vec<_> = queue.corrupt.iter().map(|c| c.source.clone()).collect();
    assert_eq!(
        errors,
        [
            DecodeRecordError::Truncated {
                needed: 1,
                remaining: 0
            },
            DecodeRecordError::MalformedKey,
        ]
    );

    // Reported, not deleted.
    assert_eq!(store.load_retained().expect("load").corrupt.len(), 1);
}

#[test]
fn a_state_left_without_its_message_is_ignored_then_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let c = id("c");
    store
        .enqueue(&c, 1, &queued("c", 1, None))
        .expect("enqueue");
    store.flush_blocking().expect("flush");
    drop(store);

    // What a crash between the two removals of `remove_outbound` leaves: the state of
    // message 2 (Released, packet id 5) without message 2.
    {
        let db = util::raw_sled(dir.path());
        let key = [0, 1, b'c', 0, 0, 0, 0, 0, 0, 0, 2, 1];
        db.open_tree("queues")
            .expect("tree")
            .insert(&key[..], &[1, 2, 0, 5][..])
            .expect("insert");
        db.flush().expect("flush");
    }

    let store = open(dir.path());
    let loaded = store.load_queue(&c).expect("load");
    assert_eq!(
        loaded.records,
        [(1, queued("c", 1, None))],
        "the state applies to nothing"
    );
    assert!(loaded.corrupt.is_empty());
    store
        .enqueue(&c, 2, &queued("c", 2, None))
        .expect("enqueue");
    let queue = store
        .load_queue(&c)
        .expect("load")
        .strict()
        .expect("nothing corrupt");
    assert_eq!(
        queue[1],
        (2, queued("c", 2, None)),
        "a new message at 2 is not Released"
    );
}
