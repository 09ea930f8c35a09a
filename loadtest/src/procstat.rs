//! CPU time and resident memory of a process, read from `/proc/PID/stat`: the brokers' (given
//! `--broker-pid`, summed over several) and the tool's own, so that cost per message can be
//! reported.

use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time consumed so far.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// Reads the CPU time and resident set of `pid`.
pub fn read(pid: u32) -> io::Result<Usage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))
}

/// Parses the fields we need out of a `/proc/PID/stat` line. The command name (field 2) is
/// in parentheses and may contain spaces, so the fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<Usage> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the command name: field 3 (state) is index 0 here; utime is field 14, stime 15,
    // rss (pages) 24.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let ticks = clock_ticks();
    let cpu_ticks = utime + stime;
    Some(Usage {
        cpu: Duration::from_secs(cpu_ticks / ticks)
            + Duration::from_nanos((cpu_ticks % ticks) * 1_000_000_000 / ticks),
        rss: rss_pages * page_size(),
    })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Follows a set of processes over a run: CPU use per interval, peak memory, totals.
#[derive(Debug)]
pub struct Meter {
    pids: Vec<u32>,
    /// Each process's CPU time at its last successful reading: a process that has exited
    /// (a worker at the end of a run) keeps counting with what it had used, instead of
    /// vanishing from the sum and making the total go backwards.
    last_cpu: Vec<Duration>,
    first: Option<(Instant, Duration)>,
    last: Option<(Instant, Duration)>,
    peak_rss: u64,
    last_rss: u64,
}

/// What a [`Meter`] measured over a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterSummary {
    /// CPU seconds consumed between the first and the last reading.
    pub cpu_seconds: f64,
    /// Average CPU use, percent of one core.
    pub cpu_percent: f64,
    /// Largest resident set seen (sum over the processes), bytes.
    pub rss_peak_bytes: u64,
    /// Resident set at the last reading, bytes.
    pub rss_last_bytes: u64,
}

impl Meter {
    /// A meter of these processes.
    pub fn new(pids: Vec<u32>) -> Self {
        Self {
            last_cpu: vec![Duration::ZERO; pids.len()],
            pids,
            first: None,
            last: None,
            peak_rss: 0,
            last_rss: 0,
        }
    }

    /// Adds a process (a worker started later).
    pub fn add_pid(&mut self, pid: u32) {
        self.pids.push(pid);
        self.last_cpu.push(Duration::ZERO);
    }

    /// The CPU time the processes have used so far.
    pub fn cpu_total(&self) -> Duration {
        self.pids
            .iter()
            .filter_map(|&pid| read(pid).ok())
            .map(|u| u.cpu)
            .sum()
    }

    /// Takes a reading; returns the CPU use since the previous one (percent of one core)
    /// and the current resident set. A process that has exited counts the CPU time of its
    /// last reading and no memory.
    pub fn sample(&mut self) -> (f64, u64) {
        let now = Instant::now();
        let mut rss = 0;
        for (&pid, last) in self.pids.iter().zip(self.last_cpu.iter_mut()) {
            if let Ok(u) = read(pid) {
                *last = u.cpu.max(*last);
                rss += u.rss;
            }
        }
        let cpu: Duration = self.last_cpu.iter().sum();
        self.peak_rss = self.peak_rss.max(rss);
        self.last_rss = rss;
        let pct = match self.last {
            Some((t, c)) if now > t => {
                cpu.saturating_sub(c).as_secs_f64() / now.duration_since(t).as_secs_f64() * 100.0
            }
            _ => 0.0,
        };
        if self.first.is_none() {
            self.first = Some((now, cpu));
        }
        self.last = Some((now, cpu));
        (pct, rss)
    }

    /// The totals between the first and the last reading.
    pub fn summary(&self) -> MeterSummary {
        let (cpu_seconds, cpu_percent) = match (self.first, self.last) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                let cpu = c1.saturating_sub(c0).as_secs_f64();
                (cpu, cpu / t1.duration_since(t0).as_secs_f64() * 100.0)
            }
            _ => (0.0, 0.0),
        };
        MeterSummary {
            cpu_seconds,
            cpu_percent,
            rss_peak_bytes: self.peak_rss,
            rss_last_bytes: self.last_rss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    3 0 100 123456789 1000 18446744073709551615";
        let u = parse_stat(line).expect("a valid line");
        let ticks = clock_ticks();
        assert_eq!(u.cpu, Duration::from_secs_f64(300.0 / ticks as f64));
        assert_eq!(u.rss, 1000 * page_size());
    }

    #[test]
    fn reads_its_own_process() {
        let u = read(std::process::id()).expect("/proc/self is readable");
        assert!(u.rss > 0);
    }

    #[test]
    fn a_process_that_exits_keeps_its_cpu_in_the_total() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; read _",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut meter = Meter::new(vec![]);
        meter.sample();
        meter.add_pid(child.id());
        // Wait until the child has burnt measurable CPU (it then blocks on stdin).
        let deadline = Instant::now() + Duration::from_secs(30);
        while read(child.id()).map_or(Duration::ZERO, |u| u.cpu) < Duration::from_millis(50) {
            assert!(Instant::now() < deadline, "the child used no CPU");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        meter.sample();
        let before = meter.summary().cpu_seconds;
        assert!(before >= 0.05, "{before}");
        drop(child.stdin.take());
        child.wait().expect("exits");
        meter.sample();
        let after = meter.summary().cpu_seconds;
        assert!(
            after >= before,
            "the exited child's CPU still counts: {after} < {before}"
        );
    }
}
