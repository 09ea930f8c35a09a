//! Worker processes (`--workers`) and the `report` subcommand, against a real Mosquitto.

mod common;

use std::time::Duration;

use common::{Mosquitto, at, json, loadtest, num, run};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn workers_split_the_clients_and_merge_their_results() {
    let broker = Mosquitto::start("");
    let (out, r) = run(
        &[
            "pairs",
            "-b",
            &broker.url(),
            "-c",
            "6",
            "-q",
            "1",
            "-n",
            "200",
            "-r",
            "1000",
            "--workers",
            "3",
            "--expect-loss",
            "0",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(num(&r, "workers"), 3);
    assert_eq!(num(&r, "connections.succeeded"), 12);
    assert_eq!(num(&r, "total.sent"), 1200);
    assert_eq!(num(&r, "total.acked"), 1200);
    assert_eq!(num(&r, "total.received"), 1200);
    assert_eq!(num(&r, "total.latency.count"), 1200);
    assert_eq!(num(&r, "flows.count"), 6);
    assert_eq!(num(&r, "total.lost"), 0);
}

#[test]
fn workers_merge_flows_that_cross_processes() {
    // One publisher in worker 0, its subscribers spread over both workers.
    let broker = Mosquitto::start("");
    let (out, r) = run(
        &[
            "fanout",
            "-b",
            &broker.url(),
            "-c",
            "5",
            "-n",
            "100",
            "-r",
            "500",
            "--workers",
            "2",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(num(&r, "total.expected"), 500);
    assert_eq!(num(&r, "total.received"), 500);
    assert_eq!(num(&r, "total.lost"), 0);
}

#[test]
fn report_turns_results_into_one_html_page() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    for qos in ["0", "1"] {
        let path = dir.path().join(format!("qos{qos}.json"));
        let label = format!("qos{qos}");
        let out = loadtest(
            &[
                "pairs",
                "-b",
                &broker.url(),
                "-c",
                "2",
                "-q",
                qos,
                "-r",
                "200",
                "-d",
                "2s",
                "--label",
                &label,
                "--json",
                path.to_str().expect("utf-8"),
            ],
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(at(&json(&path), "label"), label.as_str());
        inputs.push(path);
    }
    let html = dir.path().join("report.html");
    let out = loadtest(
        &[
            "report",
            inputs[0].to_str().expect("utf-8"),
            inputs[1].to_str().expect("utf-8"),
            "-o",
            html.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let page = std::fs::read_to_string(&html).expect("the report was written");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("qos0") && page.contains("qos1"));
    assert!(
        !page.contains("<script") && !page.contains("src="),
        "self-contained"
    );
}

#[test]
fn report_refuses_a_file_that_is_not_a_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"hello\": 1}").expect("write");
    let out = loadtest(
        &["report", bogus.to_str().expect("utf-8"), "-o", "/dev/null"],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a run result"));
}
