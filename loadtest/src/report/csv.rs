//! `--csv FILE`: the per-second samples as CSV.

use std::fmt::Write;

use crate::report::result::RunResult;

/// The CSV text: a header line and one line per second.
pub fn render(r: &RunResult) -> String {
    let mut out = String::from(
        "t_s,phase,open,connects,sent,acked,received,p50_us,p99_us,max_us,errors,broker_cpu_pct,broker_rss_bytes,tool_cpu_pct,tool_rss_bytes\n",
    );
    for s in &r.samples {
        let _ = writeln!(
            out,
            "{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{}",
            s.t,
            s.phase,
            s.open,
            s.connects,
            s.sent,
            s.acked,
            s.received,
            s.p50_us,
            s.p99_us,
            s.max_us,
            s.errors,
            s.broker_cpu.map(|c| format!("{c:.1}")).unwrap_or_default(),
            s.broker_rss.map(|b| b.to_string()).unwrap_or_default(),
            s.tool_cpu,
            s.tool_rss,
        );
    }
    out
}
