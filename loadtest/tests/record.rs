//! `--record` and `check` against a real Mosquitto: a clean persistent QoS 1/2 run checks
//! clean; a broker restarted without persistence mid-run drops the persistent sessions,
//! which the checker reports (and fails on).

mod common;

use std::time::Duration;

use common::{Mosquitto, json, loadtest, num};

const LIMIT: Duration = Duration::from_secs(30);

fn check(record: &std::path::Path, verdict: &std::path::Path) -> std::process::Output {
    loadtest(
        &[
            "check",
            record.to_str().expect("utf-8"),
            "--json",
            verdict.to_str().expect("utf-8"),
        ],
        LIMIT,
    )
}

#[test]
fn a_persistent_qos1_and_qos2_run_checks_clean() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    for qos in ["1", "2"] {
        let record = dir.path().join(format!("rec-{qos}.jsonl"));
        let out = loadtest(
            &[
                "pairs",
                "-b",
                &broker.url(),
                "-c",
                "3",
                "-q",
                qos,
                "-n",
                "200",
                "-r",
                "1000",
                "--persistent",
                "--client-id-prefix",
                &format!("rec{qos}"),
                "--record",
                record.to_str().expect("utf-8"),
            ],
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(0), "QoS {qos}");
        let verdict = dir.path().join(format!("verdict-{qos}.json"));
        let out = check(&record, &verdict);
        assert_eq!(out.status.code(), Some(0), "QoS {qos}");
        let v = json(&verdict);
        assert_eq!(num(&v, "sent"), 600);
        assert_eq!(num(&v, "acked"), 600);
        assert_eq!(num(&v, "owed"), 600);
        assert_eq!(num(&v, "lost"), 0);
        assert_eq!(num(&v, "qos2_duplicates"), 0);
        assert_eq!(num(&v, "order_violations"), 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("PASS"));
    }
}

#[test]
fn sessions_dropped_by_a_restart_fail_the_check() {
    // No `persistence true`: a restart forgets every session.
    let mut broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("rec.jsonl");
    let url = broker.url();
    let record_arg = record.to_str().expect("utf-8").to_owned();
    let run = std::thread::spawn(move || {
        loadtest(
            &[
                "pairs",
                "-b",
                &url,
                "-c",
                "2",
                "-q",
                "1",
                "-r",
                "100",
                "-d",
                "3s",
                "--persistent",
                "--reconnect",
                "200ms",
                "--record",
                &record_arg,
            ],
            LIMIT,
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let out = run.join().expect("the run");
    assert!(out.status.success(), "the run itself completes");
    let verdict = dir.path().join("verdict.json");
    let out = check(&record, &verdict);
    assert_eq!(out.status.code(), Some(3));
    let v = json(&verdict);
    assert!(num(&v, "sessions_lost") >= 2, "{v}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("session lost: "));
}
