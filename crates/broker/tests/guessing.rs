//! Password guessing over hundreds of parallel connections, on loopback with real sockets:
//! the guesses a user can be subjected to are bounded whatever the number of connections
//! (`auth_failures_per_user`), the hashing the node accepts at once is bounded
//! (`auth_max_concurrent_hashes`, `auth_hash_queue`), and legitimate clients still log in
//! within 500 ms meanwhile. Guessers and legitimate clients use different 127/8 source
//! addresses, so the node sees different machines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use shoal_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Parallel guessing connections.
const GUESSERS: usize = 300;
/// How soon a legitimate login must be answered during the attack.
const PROMPT: Duration = Duration::from_millis(500);
/// The same for a login whose password must be hashed: one PBKDF2 derivation, which takes
/// 100-330 ms in a debug build and more on a loaded CI machine.
const PROMPT_HASHED: Duration = Duration::from_millis(1500);
/// How long a guesser waits for its CONNACK (the failure delay reaches 5 s).
const ANSWER: Duration = Duration::from_secs(10);

/// A connection to `addr` from the loopback address `source`.
async fn open_from(source: &str, addr: SocketAddr, version: ProtocolVersion) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind the source address");
    let stream = socket.connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    Raw::over(Box::new(stream), version)
}

/// One login from `source`: the CONNACK's reason code (`None`: closed without one), and
/// how long it took.
async fn login(
    source: &str,
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: &str,
    password: &str,
) -> (Option<ConnectReasonCode>, Duration) {
    let started = Instant::now();
    let mut raw = open_from(source, addr, version).await;
    let mut connect = Connect::new(version, s(client_id));
    connect.username = Some(s(user));
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(version, &mut buf)
        .expect("encodes");
    raw.send_bytes(&buf).await;
    let code = match raw.recv_within(ANSWER).await {
        Some(Packet::ConnAck(ack)) => Some(ack.reason_code),
        None => None,
        Some(other) => panic!("expected CONNACK, got {other:?}"),
    };
    (code, started.elapsed())
}

/// Counts each answer.
fn tally(codes: &[Option<ConnectReasonCode>]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for code in codes {
        *counts.entry(format!("{code:?}")).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_parallel_guessers_get_a_handful_of_guesses_and_users_still_log_in() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland"), ("carol", "lewis")]);
    let node = TestNode::start_with(|raw| {
        raw.password_file = Some(passwd);
        raw.allow_anonymous = Some(false);
        raw.auth_failures_per_user = Some(5);
        raw.auth_failures_per_user_window = Some(60);
        raw.auth_max_concurrent_hashes = Some(2);
        raw.auth_hash_queue = Some(8);
    })
    .await;
    let addr = node.addr();
    // alice logged in from her machine before the attack: the node knows her there.
    let (code, first) = login("127.0.0.2", addr, V5, "alice-home", "alice", "wonderland").await;
    assert_eq!(code, Some(ConnectReasonCode::Success));
    println!("alice's first login (a hash) took {first:?}");
    let before = node.node.hash_stats();

    // 300 connections from ten addresses, two guesses each, all at once.
    let started = Instant::now();
    let mut guessers = Vec::new();
    for i in 0..GUESSERS {
        guessers.push(tokio::spawn(async move {
            let source = format!("127.0.1.{}", 1 + i % 10);
            let mut codes = Vec::new();
            for attempt in 0..2 {
                let (code, _) = login(
                    &source,
                    addr,
                    V5,
                    &format!("guess-{i}-{attempt}"),
                    "alice",
                    &format!("guess-{i}-{attempt}"),
                )
                .await;
                codes.push(code);
            }
            codes
        }));
    }
    // While they guess: alice from home (a password the node remembers) and carol (a
    // hash, never seen before) from another machine are let in at once. They log in once
    // alice's burst of guesses has been hashed (a debug build's hash takes ~170 ms, so
    // waiting behind those five in two slots would take most of the 500 ms by itself);
    // the guessers keep at it for seconds after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = node.node.hash_stats();
        if (now.hashes - before.hashes >= 5 && now.in_flight == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attack_went_on = started.elapsed();
    let (alice, alice_took) =
        login("127.0.0.2", addr, V5, "alice-home", "alice", "wonderland").await;
    let (carol, carol_took) = login("127.0.0.3", addr, V5, "carol", "carol", "lewis").await;
    // alice from a machine the node has never seen her on waits like the guessers.
    let (stranger, _) = login("127.0.0.4", addr, V5, "alice-new", "alice", "wonderland").await;
    println!(
        "during the attack: alice {alice:?} in {alice_took:?}, carol {carol:?} in {carol_took:?}"
    );

    let mut codes = Vec::new();
    for guesser in guessers {
        codes.extend(guesser.await.expect("guesser"));
    }
    let took = started.elapsed();
    assert!(
        took > attack_went_on + Duration::from_secs(2),
        "the legitimate logins ran during the attack ({attack_went_on:?} of {took:?})"
    );
    let after = node.node.hash_stats();
    let counts = tally(&codes);
    let hashes = after.hashes - before.hashes;
    println!(
        "{} guesses in {took:?}: {counts:?}; {hashes} hashes, peak {} at once",
        codes.len(),
        after.peak_in_flight
    );

    assert_eq!(alice, Some(ConnectReasonCode::Success));
    assert!(alice_took < PROMPT, "alice took {alice_took:?}");
    assert_eq!(carol, Some(ConnectReasonCode::Success));
    assert!(carol_took < PROMPT_HASHED, "carol took {carol_took:?}");
    assert_eq!(stranger, Some(ConnectReasonCode::ServerBusy));
    // Every guess was answered: a wrong password, or busy without a check.
    assert_eq!(codes.len(), 2 * GUESSERS);
    let checked = codes
        .iter()
        .filter(|c| **c == Some(ConnectReasonCode::BadUserNameOrPassword))
        .count();
    let refused = codes
        .iter()
        .filter(|c| **c == Some(ConnectReasonCode::ServerBusy))
        .count();
    assert_eq!(checked + refused, codes.len(), "{counts:?}");
    // The burst of 5, and at most one more per 12 s of the test.
    let allowed = 5 + (took.as_secs() / 12) as usize + 1;
    assert!(checked <= allowed, "{checked} guesses checked: {counts:?}");
    assert!(checked >= 1, "some guesses are checked: {counts:?}");
    // Hashes: the guesses checked, and carol's.
    assert!(
        hashes <= (allowed + 1) as u64,
        "{hashes} hashes for {checked} checked guesses"
    );
    assert!(after.peak_in_flight <= 2, "{after:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_hashed_a_few_at_a_time_and_the_rest_refused_busy_at_once() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let node = TestNode::start_with(|raw| {
        raw.password_file = Some(passwd);
        // Only the hashing bound: no limit per user or address.
        raw.auth_failures_per_user = Some(0);
        raw.auth_failures_per_address = Some(0);
        raw.auth_max_concurrent_hashes = Some(2);
        raw.auth_hash_queue = Some(4);
    })
    .await;
    let addr = node.addr();
    let (code, _) = login("127.0.0.2", addr, V5, "alice", "alice", "wonderland").await;
    assert_eq!(code, Some(ConnectReasonCode::Success));
    let before = node.node.hash_stats();

    // 300 MQTT 3.1.1 connections guessing 300 user names, all at once, from 30 addresses.
    let started = Instant::now();
    let mut guessers = Vec::new();
    for i in 0..GUESSERS {
        guessers.push(tokio::spawn(async move {
            let source = format!("127.0.2.{}", 1 + i % 30);
            login(
                &source,
                addr,
                V4,
                &format!("g{i}"),
                &format!("user{i}"),
                "x",
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (alice, alice_took) = login("127.0.0.2", addr, V5, "alice", "alice", "wonderland").await;
    let alice_done = started.elapsed();
    let mut codes = Vec::new();
    let mut busy_took = Duration::ZERO;
    let mut last_answer = Duration::ZERO;
    for guesser in guessers {
        let (code, took) = guesser.await.expect("guesser");
        last_answer = last_answer.max(took);
        if code == Some(ConnectReasonCode::ServerUnavailable) {
            busy_took = busy_took.max(took);
        }
        codes.push(code);
    }
    let after = node.node.hash_stats();
    let hashes = after.hashes - before.hashes;
    let counts = tally(&codes);
    println!(
        "{counts:?} in {:?}; {hashes} hashes, peak {} at once; alice in {alice_took:?}; slowest busy answer {busy_took:?}",
        started.elapsed(),
        after.peak_in_flight
    );

    assert_eq!(alice, Some(ConnectReasonCode::Success));
    assert!(alice_took < PROMPT, "alice took {alice_took:?}");
    assert!(
        last_answer > alice_done,
        "alice logged in during the flood ({alice_done:?}, last guess answered after {last_answer:?})"
    );
    let checked = codes
        .iter()
        .filter(|c| **c == Some(ConnectReasonCode::BadUserNameOrPassword))
        .count();
    // 3.1.1 return code 3 (server unavailable) is MQTT 5's 0x89 Server busy.
    let busy = codes
        .iter()
        .filter(|c| **c == Some(ConnectReasonCode::ServerUnavailable))
        .count();
    assert_eq!(checked + busy, GUESSERS, "{counts:?}");
    assert!(busy > 0, "the queue overflowed: {counts:?}");
    assert_eq!(hashes, checked as u64, "one hash per checked guess");
    assert!(after.peak_in_flight <= 2, "{after:?}");
    assert_eq!(after.in_flight, 0);
}
