//! A network namespace joined to the host by a veth pair (root only), removed on drop: a
//! node run inside it (`ip netns exec`) can be cut off with iptables rules of its own.

use std::process::{Command, Stdio};

/// Runs `program args`, quietly; whether it succeeded.
pub fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespace, the host's address on its veth pair and the namespace's.
pub struct Netns {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
}

impl Netns {
    /// A namespace `shoal-{kind}-{tag}` (tag from the process id) on `10.{octet}.x.0/24`;
    /// `None` when it cannot be made (not root).
    pub fn create(kind: &str, octet: u8) -> Option<Self> {
        let tag = std::process::id() % 10_000;
        let name = format!("shoal-{kind}-{tag}");
        let letter = kind.chars().next().unwrap_or('x');
        let (host, peer) = (format!("sh{letter}{tag}a"), format!("sh{letter}{tag}b"));
        let subnet = 100 + (tag % 100);
        let netns = Self {
            host_ip: format!("10.{octet}.{subnet}.1"),
            ns_ip: format!("10.{octet}.{subnet}.2"),
            name: name.clone(),
        };
        let _ = run_quiet("ip", &["netns", "del", &name]);
        let host_cidr = format!("{}/24", netns.host_ip);
        let ns_cidr = format!("{}/24", netns.ns_ip);
        let steps: [&[&str]; 8] = [
            &["netns", "add", &name],
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
            &["link", "set", &peer, "netns", &name],
            &["addr", "add", &host_cidr, "dev", &host],
            &["link", "set", &host, "up"],
            &["-n", &name, "addr", "add", &ns_cidr, "dev", &peer],
            &["-n", &name, "link", "set", &peer, "up"],
            &["-n", &name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if !run_quiet("ip", step) {
                eprintln!("ip {} failed", step.join(" "));
                return None;
            }
        }
        Some(netns)
    }

    /// Runs `iptables args` inside the namespace.
    pub fn iptables(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "iptables"];
        all.extend_from_slice(args);
        assert!(run_quiet("ip", &all), "iptables {args:?} in {}", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = run_quiet("ip", &["netns", "del", &self.name]);
    }
}
