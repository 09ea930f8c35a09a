//! The human summary printed at the end of a run.

use std::fmt::Write;

use crate::report::result::{RunResult, StreamResult, UsageResult};
use crate::units::{fmt_bytes, fmt_count, fmt_micros};

fn stream_lines(out: &mut String, s: &StreamResult) {
    let _ = writeln!(
        out,
        "  {:<12} sent {:>10} ({}/s)  acked {:>10}  received {:>10} ({}/s)",
        s.name,
        s.sent,
        fmt_count(s.sent_per_s),
        s.acked,
        s.received,
        fmt_count(s.received_per_s),
    );
    let _ = writeln!(
        out,
        "  {:<12} expected {:>10}  lost {:>8} ({:.3}%)  duplicates {}  reordered {}",
        "", s.expected, s.lost, s.loss_percent, s.duplicates, s.reordered
    );
    if s.latency.count > 0 {
        let l = &s.latency;
        let _ = writeln!(
            out,
            "  {:<12} latency p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            "",
            fmt_micros(l.p50_us),
            fmt_micros(l.p90_us),
            fmt_micros(l.p99_us),
            fmt_micros(l.p999_us),
            fmt_micros(l.max_us),
            l.count
        );
    }
}

/// The summary text.
pub fn render(r: &RunResult) -> String {
    let mut out = String::new();
    let groups: Vec<String> = r
        .groups
        .iter()
        .map(|g| format!("{} {}", g.count, g.name))
        .collect();
    let _ = writeln!(
        out,
        "\n{} against {} (MQTT {}), {}{}",
        r.scenario,
        r.broker_urls().join(", "),
        match r.mqtt_version {
            3 => "3.1",
            4 => "3.1.1",
            _ => "5.0",
        },
        groups.join(", "),
        if r.workers > 1 {
            format!(", {} workers", r.workers)
        } else {
            String::new()
        }
    );
    placement_line(&mut out, r);
    version_line(&mut out, r);
    let _ = writeln!(
        out,
        "phases: connect {:.1}s, run {:.1}s, drain {:.1}s",
        r.connect_seconds, r.run_seconds, r.drain_seconds
    );
    let c = &r.connections;
    let _ = writeln!(
        out,
        "connections: {} of {} established (peak open {}), {} failed, {} lost; {}/s; connect p50 {} p99 {} max {}",
        c.succeeded,
        c.target,
        c.peak_open,
        c.failed,
        c.lost,
        fmt_count(c.rate_per_s),
        fmt_micros(c.latency.p50_us),
        fmt_micros(c.latency.p99_us),
        fmt_micros(c.latency.max_us),
    );
    if r.total.sent > 0 || r.total.received > 0 {
        let _ = writeln!(out, "messages:");
        for s in &r.streams {
            stream_lines(&mut out, s);
        }
        if r.streams.len() > 1 {
            stream_lines(&mut out, &r.total);
        }
        let _ = writeln!(
            out,
            "flows: {} ({} with loss, {} with duplicates){}",
            r.flows.count,
            r.flows.with_loss,
            r.flows.with_duplicates,
            if r.unmeasured > 0 {
                format!("; {} unmeasured messages received", r.unmeasured)
            } else {
                String::new()
            }
        );
        for f in r.flows.worst.iter().take(5) {
            let _ = writeln!(
                out,
                "  {} -> {}: expected {}, received {}, lost {}, duplicates {}",
                f.publisher, f.topic, f.expected, f.received, f.lost, f.duplicates
            );
        }
    }
    if !r.errors.is_empty() {
        let _ = writeln!(out, "errors and reason codes:");
        for (k, v) in &r.errors {
            let _ = writeln!(out, "  {v:>8}  {k}");
        }
    }
    usage_line(&mut out, "tool", &r.tool_usage, "message sent or received");
    if let Some(b) = &r.broker_usage {
        let label = match b.pids.len() {
            0 | 1 => "broker".to_owned(),
            n => format!("brokers ({n} processes)"),
        };
        usage_line(&mut out, &label, b, "delivered message");
    }
    for e in &r.expectations {
        let _ = writeln!(
            out,
            "expect {}: {} (actual {})",
            e.what,
            if e.ok { "ok" } else { "FAILED" },
            e.actual
        );
    }
    out
}

/// Where the clients went, when there was a choice (several brokers), with each group's
/// brokers in turn: `placement: cross; brokers of clients 0, 1, ... (-b = 0, repeating):
/// sub 1,0; pub 0,1`.
fn placement_line(out: &mut String, r: &RunResult) {
    if r.broker_urls().len() < 2 {
        return;
    }
    let _ = write!(out, "placement: {}", r.placement);
    if r.groups.iter().any(|g| !g.brokers.is_empty()) {
        let groups: Vec<String> = r
            .groups
            .iter()
            .map(|g| {
                let brokers: Vec<String> = g.brokers.iter().map(ToString::to_string).collect();
                format!("{} {}", g.name, brokers.join(","))
            })
            .collect();
        let _ = write!(
            out,
            "; brokers of clients 0, 1, ... (-b = 0, repeating): {}",
            groups.join("; ")
        );
    }
    out.push('\n');
}

/// The brokers' versions, when any answered: `broker version: mosquitto version 2.0.11`,
/// or each broker's (`?` for one that did not answer) when they differ.
fn version_line(out: &mut String, r: &RunResult) {
    let known: Vec<&str> = r
        .broker_versions
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let Some(first) = known.first() else {
        return;
    };
    if known.len() == r.broker_versions.len() && known.iter().all(|v| v == first) {
        let _ = writeln!(out, "broker version: {first}");
        return;
    }
    let each: Vec<String> = r
        .broker_urls()
        .iter()
        .zip(&r.broker_versions)
        .map(|(url, v)| format!("{url} {}", v.as_deref().unwrap_or("?")))
        .collect();
    let _ = writeln!(out, "broker versions: {}", each.join("; "));
}

/// One line of CPU and memory use: `label: N CPU s (P% of a core), peak RSS M, ...`.
fn usage_line(out: &mut String, label: &str, usage: &UsageResult, per: &str) {
    let _ = write!(
        out,
        "{label}: {:.1} CPU s ({:.0}% of a core), peak RSS {}",
        usage.meter.cpu_seconds,
        usage.meter.cpu_percent,
        fmt_bytes(usage.meter.rss_peak_bytes)
    );
    if let Some(us) = usage.cpu_us_per_msg {
        let _ = write!(out, ", {us:.2} CPU us per {per}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::result::{GroupInfo, UsageResult};
    use crate::scenario::Placement;

    #[test]
    fn names_every_broker_and_sums_their_processes() {
        let mut r = RunResult {
            scenario: "conn".to_owned(),
            broker: "mqtt://127.0.0.1:1883".to_owned(),
            brokers: vec![
                "mqtt://127.0.0.1:1883".to_owned(),
                "mqtt://127.0.0.1:1884".to_owned(),
            ],
            broker_usage: Some(UsageResult {
                pids: vec![10, 11],
                ..UsageResult::default()
            }),
            ..RunResult::default()
        };
        let text = render(&r);
        assert!(
            text.contains("conn against mqtt://127.0.0.1:1883, mqtt://127.0.0.1:1884 (MQTT"),
            "{text}"
        );
        assert!(text.contains("brokers (2 processes): "), "{text}");
        // A result written before `brokers` existed names its one broker.
        r.brokers.clear();
        r.broker_usage = None;
        assert!(render(&r).contains("conn against mqtt://127.0.0.1:1883 (MQTT"));
    }

    #[test]
    fn shows_the_placement_over_several_brokers() {
        let group = |name: &str, brokers: Vec<usize>| GroupInfo {
            name: name.to_owned(),
            count: 4,
            brokers,
        };
        let mut r = RunResult {
            scenario: "pairs".to_owned(),
            broker: "mqtt://127.0.0.1:1883".to_owned(),
            brokers: vec![
                "mqtt://127.0.0.1:1883".to_owned(),
                "mqtt://127.0.0.1:1884".to_owned(),
            ],
            placement: Placement::Cross,
            groups: vec![group("sub", vec![1, 0]), group("pub", vec![0, 1])],
            ..RunResult::default()
        };
        let text = render(&r);
        assert!(
            text.contains(
                "placement: cross; brokers of clients 0, 1, ... (-b = 0, repeating): \
                 sub 1,0; pub 0,1\n"
            ),
            "{text}"
        );
        // A result written before placements were recorded: the mode alone.
        r.placement = Placement::Spread;
        r.groups = vec![group("sub", Vec::new())];
        assert!(render(&r).contains("placement: spread\n"));
        // One broker: no choice, no line.
        r.brokers.truncate(1);
        assert!(!render(&r).contains("placement"));
    }

    #[test]
    fn shows_the_brokers_versions_they_answered() {
        let mut r = RunResult {
            broker: "mqtt://a:1".to_owned(),
            brokers: vec!["mqtt://a:1".to_owned(), "mqtt://b:2".to_owned()],
            broker_versions: vec![Some("shoal 0.1.0".to_owned()); 2],
            ..RunResult::default()
        };
        assert!(render(&r).contains("broker version: shoal 0.1.0\n"));
        r.broker_versions[1] = None;
        assert!(
            render(&r).contains("broker versions: mqtt://a:1 shoal 0.1.0; mqtt://b:2 ?\n"),
            "{}",
            render(&r)
        );
        r.broker_versions = vec![None, None];
        assert!(!render(&r).contains("broker version"));
    }
}
