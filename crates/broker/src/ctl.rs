//! `shoal ctl`: a node's admin API (`/api/v1`) from the command line, so that an operator
//! does not hand-write curl lines. Prints the API's JSON, indented.
//!
//! ```text
//! shoal ctl [--admin http://HOST:PORT] [--token TOKEN] COMMAND
//!   status | nodes | routes
//!   clients [--page N] [--limit N]      client ID      kick ID
//!   subscriptions [--page N] [--limit N]
//!   retained [--page N] [--limit N]     retained get TOPIC      retained delete TOPIC
//!   bans      bans add TARGET [--seconds N] [--reason TEXT]     bans remove TARGET
//! ```
//!
//! `--admin` defaults to `SHOAL_CTL_ADMIN`, else `http://127.0.0.1:18083`; `--token` to
//! `SHOAL_ADMIN_TOKEN`. Exit status: 0 done, 1 the node refused or failed (its answer is
//! printed), 2 a usage error or no node to talk to.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const USAGE: &str = "usage: shoal ctl [--admin http://HOST:PORT] [--token TOKEN] COMMAND
commands:
  status                                  this node and the cluster
  nodes                                   the nodes of the cluster
  clients [--page N] [--limit N]          sessions, connected or not
  client ID                               one session and its subscriptions
  kick ID                                 disconnect a client (MQTT 5: 0x98)
  subscriptions [--page N] [--limit N]    every subscription
  routes                                  topic filters and the nodes that hold them
  retained [--page N] [--limit N]         retained messages
  retained get TOPIC | retained delete TOPIC
  bans | bans add TARGET [--seconds N] [--reason TEXT] | bans remove TARGET
    (TARGET: client:ID, user:NAME, addr:IP or net:CIDR)
--admin defaults to $SHOAL_CTL_ADMIN, else http://127.0.0.1:18083; --token to $SHOAL_ADMIN_TOKEN.";

/// Runs `shoal ctl ARGS`: the exit status.
pub fn command(args: &[String]) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("shoal ctl: {message}");
            2
        }
    }
}

/// A usage error, or a node that cannot be reached.
struct Usage(String);

fn run(args: &[String]) -> Result<i32, Usage> {
    let mut admin =
        std::env::var("SHOAL_CTL_ADMIN").unwrap_or_else(|_| "http://127.0.0.1:18083".into());
    let mut token = std::env::var("SHOAL_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let mut page = None;
    let mut limit = None;
    let mut seconds = None;
    let mut reason = None;
    let mut words = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--admin" => admin = value("--admin")?,
            "--token" => token = Some(value("--token")?),
            "--page" => page = Some(number(&value("--page")?)?),
            "--limit" => limit = Some(number(&value("--limit")?)?),
            "--seconds" => seconds = Some(number(&value("--seconds")?)?),
            "--reason" => reason = Some(value("--reason")?),
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            flag if flag.starts_with("--") => {
                return Err(Usage(format!("unknown flag {flag}\n{USAGE}")));
            }
            word => words.push(word.to_string()),
        }
    }
    let paging = || {
        let mut query = Vec::new();
        if let Some(page) = page {
            query.push(format!("page={page}"));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        }
    };
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (method, path, body) = match words.as_slice() {
        ["status"] => ("GET", "/api/v1/status".to_string(), None),
        ["nodes"] => ("GET", "/api/v1/nodes".to_string(), None),
        ["routes"] => ("GET", format!("/api/v1/routes{}", paging()), None),
        ["clients"] => ("GET", format!("/api/v1/clients{}", paging()), None),
        ["client", id] => ("GET", format!("/api/v1/clients/{}", encode(id)), None),
        ["kick", id] => ("DELETE", format!("/api/v1/clients/{}", encode(id)), None),
        ["subscriptions"] => ("GET", format!("/api/v1/subscriptions{}", paging()), None),
        ["retained"] => ("GET", format!("/api/v1/retained{}", paging()), None),
        ["retained", "get", topic] => ("GET", format!("/api/v1/retained/{}", encode(topic)), None),
        ["retained", "delete", topic] => (
            "DELETE",
            format!("/api/v1/retained/{}", encode(topic)),
            None,
        ),
        ["bans"] => ("GET", "/api/v1/bans".to_string(), None),
        ["bans", "add", target] => {
            let body =
                serde_json::json!({ "target": target, "seconds": seconds, "reason": reason });
            ("POST", "/api/v1/bans".to_string(), Some(body.to_string()))
        }
        ["bans", "remove", target] => ("DELETE", format!("/api/v1/bans/{}", encode(target)), None),
        [] => return Err(Usage(USAGE.into())),
        other => {
            return Err(Usage(format!(
                "unknown command {:?}\n{USAGE}",
                other.join(" ")
            )));
        }
    };
    let (status, text) = request(
        &admin,
        token.as_deref(),
        method,
        &path,
        body.as_deref(),
        Duration::from_secs(30),
    )
    .map_err(Usage)?;
    let shown = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.trim_end().to_string());
    if (200..300).contains(&status) {
        if !shown.is_empty() {
            println!("{shown}");
        }
        Ok(0)
    } else {
        eprintln!("shoal ctl: {method} {path}: HTTP {status}: {shown}");
        Ok(1)
    }
}

fn number(text: &str) -> Result<u64, Usage> {
    text.parse()
        .map_err(|_| Usage(format!("{text:?} is not a number")))
}

/// Percent-encodes a path segment: everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 request to the admin listener at `admin` (`http://HOST:PORT`): the status
/// code and the body, or why there is none. `wait` bounds the answer (connecting: 5 s at
/// most).
pub(crate) fn request(
    admin: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    wait: Duration,
) -> Result<(u16, String), String> {
    let host = admin
        .strip_prefix("http://")
        .ok_or_else(|| format!("--admin {admin:?}: only http:// URLs"))?
        .trim_end_matches('/');
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("--admin {admin}: {e}"))?
        .next()
        .ok_or_else(|| format!("--admin {admin}: no address"))?;
    let unreachable = |e: std::io::Error| format!("cannot reach the admin API at {admin}: {e}");
    let mut stream =
        TcpStream::connect_timeout(&addr, wait.min(Duration::from_secs(5))).map_err(unreachable)?;
    stream.set_read_timeout(Some(wait)).map_err(unreachable)?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{admin} did not answer in HTTP"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_targets_are_encoded_as_one_path_segment() {
        assert_eq!(encode("sensors/7/temp"), "sensors%2F7%2Ftemp");
        assert_eq!(encode("net:10.0.0.0/8"), "net:10.0.0.0%2F8");
        assert_eq!(encode("dev 1#"), "dev%201%23");
    }
}
