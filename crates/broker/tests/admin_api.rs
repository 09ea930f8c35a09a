//! The admin REST API (`/api/v1`) through real HTTP, driven by `shoal ctl` (the real
//! binary) against a node with real MQTT clients: status, clients with paging, one client's
//! session, kick, subscriptions, routes, retained list/read/delete, bans, and the token.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "t0ken";

/// `shoal ctl --admin ... --token TOKEN ARGS`: exit status, stdout as JSON (or Null), stderr.
async fn ctl(admin: SocketAddr, token: Option<&str>, args: &[&str]) -> (i32, Value, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("ctl")
        .arg("--admin")
        .arg(format!("http://{admin}"))
        .env_remove("SHOAL_ADMIN_TOKEN");
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    let out = cmd.args(args).output().await.expect("shoal ctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(admin: SocketAddr, args: &[&str]) -> Value {
    let (code, json, stderr) = ctl(admin, Some(TOKEN), args).await;
    assert_eq!(code, 0, "shoal ctl {args:?}: {stderr}");
    json
}

/// A raw HTTP request: the status code.
async fn http(admin: SocketAddr, request: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn client_ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["client_id"].as_str().expect("client_id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_inspect_and_steer_the_node_through_the_api_and_shoal_ctl() {
    let node = TestNode::start_with(|raw| raw.admin_token = Some(TOKEN.into())).await;
    let admin = node.node.admin_addr();

    // Without the token: 401, and ctl exits 1 with the node's answer.
    assert_eq!(
        http(admin, "GET /api/v1/status HTTP/1.1\r\nhost: x\r\n\r\n").await,
        401
    );
    let (code, _, stderr) = ctl(admin, None, &["status"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("401"), "{stderr}");

    // A connected MQTT 5 client with a subscription, and an offline persistent session.
    let (mut live, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "dev-1", |_| {}).await;
    live.subscribe(1, &[("plant/#", QoS::AtLeastOnce)]).await;
    let (mut gone, _) = Raw::connect(node.addr(), ProtocolVersion::V3_1_1, "dev-2", |c| {
        c.clean_start = false;
    })
    .await;
    gone.subscribe(1, &[("commands/dev-2", QoS::AtLeastOnce)])
        .await;
    gone.send(Packet::Disconnect(Default::default())).await;
    assert!(gone.closed().await);
    let (mut publisher, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "pub", |_| {}).await;
    publisher
        .publish("plant/1/temp", b"21.5", QosPid::AtMostOnce, true)
        .await;
    publisher
        .publish("plant/2/temp", &[0xff, 0x00], QosPid::AtMostOnce, true)
        .await;
    assert_eq!(live.next_publish().await.topic.as_str(), "plant/1/temp");
    assert_eq!(live.next_publish().await.topic.as_str(), "plant/2/temp");
    publisher.send(Packet::Disconnect(Default::default())).await;
    assert!(publisher.closed().await);

    // A retained QoS 0 message is kept once its Raft group applies it, which nobody waits
    // for: the count may lag the delivery a moment.
    let mut status = ok(admin, &["status"]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while status["retained"] != 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = ok(admin, &["status"]).await;
    }
    // A node alone is a cluster of one: its groups, led by itself.
    assert_eq!(status["cluster"]["enabled"], true);
    assert_eq!(status["cluster"]["alone"], true);
    assert_eq!(status["cluster"]["nodes"].as_array().map(Vec::len), Some(1));
    assert!(
        status["cluster"]["groups"]
            .as_array()
            .is_some_and(|g| !g.is_empty() && g.iter().all(|g| g["leader"] == 1)),
        "{}",
        status["cluster"]
    );
    assert_eq!(status["retained"], 2);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let nodes = ok(admin, &["nodes"]).await;
    assert_eq!(nodes["data"].as_array().map(Vec::len), Some(1));

    // Paging: by client id, one a page.
    let all = ok(admin, &["clients"]).await;
    assert_eq!(client_ids(&all), ["dev-1", "dev-2"]);
    let second = ok(admin, &["clients", "--page", "2", "--limit", "1"]).await;
    assert_eq!(client_ids(&second), ["dev-2"]);
    assert_eq!(second["meta"]["count"], 2);
    assert_eq!(second["data"][0]["connected"], false);
    assert_eq!(second["data"][0]["persistent"], true);

    let one = ok(admin, &["client", "dev-1"]).await;
    assert_eq!(one["connected"], true);
    assert_eq!(one["protocol"], "5.0");
    assert_eq!(
        one["address"].as_str().map(|a| a.starts_with("127.0.0.1")),
        Some(true)
    );
    assert_eq!(one["subscriptions"][0]["filter"], "plant/#");
    assert_eq!(one["subscriptions"][0]["qos"], 1);
    let (code, _, _) = ctl(admin, Some(TOKEN), &["client", "nobody"]).await;
    assert_eq!(code, 1, "an unknown client is a 404");

    let subscriptions = ok(admin, &["subscriptions"]).await;
    let filters: Vec<(&str, &str)> = subscriptions["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|s| {
            (
                s["client_id"].as_str().expect("id"),
                s["filter"].as_str().expect("filter"),
            )
        })
        .collect();
    assert_eq!(filters, [("dev-1", "plant/#"), ("dev-2", "commands/dev-2")]);
    let routes = ok(admin, &["routes"]).await;
    assert_eq!(routes["meta"]["count"], 2);

    // Retained: list, read (text and binary), delete durably.
    let retained = ok(admin, &["retained"]).await;
    assert_eq!(retained["meta"]["count"], 2);
    assert_eq!(retained["data"][0]["topic"], "plant/1/temp");
    let text = ok(admin, &["retained", "get", "plant/1/temp"]).await;
    assert_eq!(text["payload"], "21.5");
    assert_eq!(text["payload_encoding"], "utf-8");
    let binary = ok(admin, &["retained", "get", "plant/2/temp"]).await;
    assert_eq!(binary["payload"], "ff00");
    ok(admin, &["retained", "delete", "plant/1/temp"]).await;
    let (code, _, _) = ctl(admin, Some(TOKEN), &["retained", "get", "plant/1/temp"]).await;
    assert_eq!(code, 1, "deleted");
    let (mut late, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "late", |_| {}).await;
    late.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await;
    assert_eq!(late.next_publish().await.topic.as_str(), "plant/2/temp");
    assert!(late.silent_for(Duration::from_millis(300)).await);

    // Bans through the API, as through /bans.
    ok(
        admin,
        &[
            "bans",
            "add",
            "client:dev-9",
            "--seconds",
            "60",
            "--reason",
            "test",
        ],
    )
    .await;
    let bans = ok(admin, &["bans"]).await;
    assert_eq!(bans[0]["target"], "client:dev-9");
    assert_eq!(bans[0]["reason"], "test");
    ok(admin, &["bans", "remove", "client:dev-9"]).await;
    assert_eq!(ok(admin, &["bans"]).await, Value::Array(Vec::new()));

    // Kick: the client is told 0x98 and its connection ends.
    ok(admin, &["kick", "dev-1"]).await;
    match live.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::AdministrativeAction)
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert!(live.closed().await);
    let (code, _, _) = ctl(admin, Some(TOKEN), &["kick", "dev-2"]).await;
    assert_eq!(code, 1, "kicking a client that is not connected is a 404");
}

#[tokio::test]
async fn ctl_without_a_node_or_with_a_bad_command_exits_2() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (code, _, stderr) = ctl(free, None, &["status"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
    let (code, _, stderr) = ctl(free, None, &["frobnicate"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown command"), "{stderr}");
}
