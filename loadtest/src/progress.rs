//! The live display: an indicatif spinner line on a terminal, plain periodic lines otherwise
//! (CI logs, pipes), or nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::result::Sample;
use crate::units::{fmt_bytes, fmt_count, fmt_micros};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A live line on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// A live line.
    Bar,
    /// One plain line per second on standard error.
    Lines,
    /// Nothing.
    Off,
}

/// The live display of a run.
pub struct ProgressView {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl ProgressView {
    /// A display in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        let tty = std::io::stderr().is_terminal();
        match mode {
            ProgressMode::Off => Self {
                bar: None,
                lines: false,
            },
            ProgressMode::Lines => Self {
                bar: None,
                lines: true,
            },
            ProgressMode::Auto if !tty => Self {
                bar: None,
                lines: true,
            },
            ProgressMode::Auto | ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.enable_steady_tick(Duration::from_millis(200));
                Self {
                    bar: Some(bar),
                    lines: false,
                }
            }
        }
    }

    /// Shows one sample; `target` is the number of clients.
    pub fn show(&self, sample: &Sample, target: u64) {
        if self.bar.is_none() && !self.lines {
            return;
        }
        let mut line = format!(
            "[{:>5.0}s] {:<10} conn {}/{}  pub {}/s  recv {}/s",
            sample.t,
            sample.phase,
            sample.open,
            target,
            fmt_count(sample.sent as f64),
            fmt_count(sample.received as f64),
        );
        if sample.acked > 0 {
            line.push_str(&format!("  ack {}/s", fmt_count(sample.acked as f64)));
        }
        if sample.received > 0 {
            line.push_str(&format!(
                "  p50 {} p99 {}",
                fmt_micros(sample.p50_us),
                fmt_micros(sample.p99_us)
            ));
        }
        if sample.errors > 0 {
            line.push_str(&format!("  errors {}", sample.errors));
        }
        line.push_str(&format!(
            "  tool {:.0}% {}",
            sample.tool_cpu,
            fmt_bytes(sample.tool_rss)
        ));
        if let (Some(cpu), Some(rss)) = (sample.broker_cpu, sample.broker_rss) {
            line.push_str(&format!("  broker {cpu:.0}% {}", fmt_bytes(rss)));
        }
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line}"),
        }
    }

    /// Clears the live line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
