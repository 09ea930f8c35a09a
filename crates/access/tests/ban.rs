//! Bans and flapping detection through the public API.

use std::net::IpAddr;

use shoal_access::ban::{Ban, BanTarget, BanTargetError, Bans, Flapping, FlappingConfig};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn target(text: &str) -> BanTarget {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn ban(text: &str, until: Option<u64>) -> Ban {
    Ban {
        target: target(text),
        until,
        reason: format!("test ban of {text}"),
        created: 0,
    }
}

#[test]
fn every_target_kind_round_trips_through_text() {
    let cases = [
        (
            "client:sensor-1",
            BanTarget::ClientId("sensor-1".to_owned()),
        ),
        ("client:a:b/c d", BanTarget::ClientId("a:b/c d".to_owned())),
        ("user:alice", BanTarget::Username("alice".to_owned())),
        ("addr:1.2.3.4", BanTarget::Addr(ip("1.2.3.4"))),
        ("addr:::1", BanTarget::Addr(ip("::1"))),
        ("addr:fd00::17", BanTarget::Addr(ip("fd00::17"))),
        (
            "net:10.0.0.0/8",
            BanTarget::Network {
                addr: ip("10.0.0.0"),
                prefix: 8,
            },
        ),
        (
            "net:fd00::/8",
            BanTarget::Network {
                addr: ip("fd00::"),
                prefix: 8,
            },
        ),
        (
            "net:0.0.0.0/0",
            BanTarget::Network {
                addr: ip("0.0.0.0"),
                prefix: 0,
            },
        ),
        (
            "net:1.2.3.4/32",
            BanTarget::Network {
                addr: ip("1.2.3.4"),
                prefix: 32,
            },
        ),
        (
            "net:::1/128",
            BanTarget::Network {
                addr: ip("::1"),
                prefix: 128,
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(target(text), expected, "{text}");
        assert_eq!(expected.to_string(), text);
    }
}

#[test]
fn targets_are_normalised_when_parsed() {
    let cases = [
        ("net:10.1.2.3/8", "net:10.0.0.0/8"),
        ("net:fd12:3456::1/16", "net:fd12::/16"),
        ("addr:::ffff:1.2.3.4", "addr:1.2.3.4"),
        ("net:::ffff:10.9.9.9/104", "net:10.0.0.0/8"),
        ("net:::ffff:0.0.0.0/96", "net:0.0.0.0/0"),
    ];
    for (text, normalised) in cases {
        assert_eq!(target(text).to_string(), normalised, "{text}");
    }
}

#[test]
fn malformed_targets_say_what_was_expected() {
    let kind = "expected client:ID, user:NAME, addr:IP or net:IP/PREFIX";
    let cases = [
        ("", kind),
        ("alice", kind),
        ("ip:1.2.3.4", kind),
        ("Client:x", kind),
        ("client:", "the client id is empty"),
        ("user:", "the username is empty"),
        ("addr:", "\"\" is not an IPv4 or IPv6 address"),
        ("addr:1.2.3", "\"1.2.3\" is not an IPv4 or IPv6 address"),
        (
            "addr:10.0.0.0/8",
            "\"10.0.0.0/8\" is not an IPv4 or IPv6 address",
        ),
        ("net:10.0.0.0", "expected net:IP/PREFIX"),
        ("net:10.0.0.0/", "expected net:IP/PREFIX"),
        ("net:10.0.0.0/x", "expected net:IP/PREFIX"),
        ("net:10.0.0.0/300", "expected net:IP/PREFIX"),
        ("net:host/8", "\"host\" is not an IPv4 or IPv6 address"),
        ("net:10.0.0.0/33", "a prefix of 33 bits is longer than 32"),
        ("net:fd00::/129", "a prefix of 129 bits is longer than 128"),
    ];
    for (text, needle) in cases {
        let error = text
            .parse::<BanTarget>()
            .expect_err(&format!("{text:?} should not parse"));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("invalid ban target {text:?}: ")),
            "{message}"
        );
        assert!(
            message.contains(needle),
            "{text:?}: {message:?} lacks {needle:?}"
        );
    }
    assert_eq!(
        BanTarget::network(ip("10.0.0.0"), 33),
        Err(BanTargetError::PrefixTooLong {
            input: "net:10.0.0.0/33".to_owned(),
            prefix: 33,
            max: 32,
        })
    );
}

#[test]
fn no_bans_ban_nobody() {
    let bans = Bans::default();
    assert!(bans.is_empty());
    assert_eq!(bans.check(0, "c", Some("u"), ip("1.2.3.4")), None);
    assert_eq!(bans.check_addr(0, ip("::1")), None);
    assert_eq!(bans.list(0), []);
}

#[test]
fn each_kind_of_ban_applies_to_what_it_names() {
    let mut bans = Bans::new();
    bans.add(ban("client:bad-client", None));
    bans.add(ban("user:mallory", None));
    bans.add(ban("addr:192.0.2.1", None));
    bans.add(ban("net:198.51.100.0/24", None));
    let clean = ip("203.0.113.5");
    let target_of = |ban: Option<&Ban>| ban.map(|b| b.target.to_string());

    assert_eq!(target_of(bans.check(0, "good", Some("alice"), clean)), None);
    assert_eq!(
        target_of(bans.check(0, "bad-client", Some("alice"), clean)),
        Some("client:bad-client".to_owned())
    );
    assert_eq!(
        target_of(bans.check(0, "good", Some("mallory"), clean)),
        Some("user:mallory".to_owned())
    );
    assert_eq!(target_of(bans.check(0, "good", None, clean)), None);
    assert_eq!(
        target_of(bans.check(0, "good", None, ip("192.0.2.1"))),
        Some("addr:192.0.2.1".to_owned())
    );
    assert_eq!(
        target_of(bans.check(0, "good", None, ip("198.51.100.77"))),
        Some("net:198.51.100.0/24".to_owned())
    );
    // A username ban is not a client id ban, nor the other way round.
    assert_eq!(
        target_of(bans.check(0, "mallory", Some("bad-client"), clean)),
        None
    );
    // Before CONNECT only addresses count.
    assert_eq!(bans.check_addr(0, clean), None);
    assert_eq!(
        target_of(bans.check_addr(0, ip("192.0.2.1"))),
        Some("addr:192.0.2.1".to_owned())
    );
    assert_eq!(
        target_of(bans.check_addr(0, ip("198.51.100.1"))),
        Some("net:198.51.100.0/24".to_owned())
    );
}

#[test]
fn check_returns_the_client_id_ban_first() {
    let mut bans = Bans::new();
    bans.add(ban("net:0.0.0.0/0", None));
    bans.add(ban("addr:10.0.0.1", None));
    bans.add(ban("user:u", None));
    bans.add(ban("client:c", None));
    let first = |client: &str, user: Option<&str>| {
        bans.check(0, client, user, ip("10.0.0.1"))
            .map(|b| b.target.to_string())
    };
    assert_eq!(first("c", Some("u")).as_deref(), Some("client:c"));
    assert_eq!(first("x", Some("u")).as_deref(), Some("user:u"));
    assert_eq!(first("x", None).as_deref(), Some("addr:10.0.0.1"));
}

#[test]
fn bans_expire_at_until() {
    let mut bans = Bans::new();
    bans.add(ban("client:temp", Some(1_000)));
    bans.add(ban("client:forever", None));
    let addr = ip("10.0.0.1");
    assert!(bans.check(999, "temp", None, addr).is_some());
    assert_eq!(
        bans.check(1_000, "temp", None, addr),
        None,
        "until is exclusive"
    );
    assert!(bans.check(u64::MAX, "forever", None, addr).is_some());
    assert_eq!(bans.list(999).len(), 2);
    assert_eq!(bans.list(1_000).len(), 1);
    assert_eq!(bans.len(), 2, "expired bans are held until purged");
    assert_eq!(bans.purge(999), 0);
    assert_eq!(bans.purge(1_000), 1);
    assert_eq!(bans.len(), 1);
    assert_eq!(bans.list(1_000)[0].target.to_string(), "client:forever");
}

#[test]
fn an_expired_ban_does_not_hide_a_later_one() {
    let mut bans = Bans::new();
    bans.add(ban("client:c", Some(10)));
    bans.add(ban("net:10.0.0.0/8", Some(10)));
    bans.add(ban("net:10.0.0.0/16", None));
    let hit = bans.check(20, "c", None, ip("10.0.0.1")).expect("banned");
    assert_eq!(hit.target.to_string(), "net:10.0.0.0/16");
}

#[test]
fn adding_the_same_target_replaces_the_ban() {
    let mut bans = Bans::new();
    for text in ["client:c", "user:u", "addr:10.0.0.1", "net:10.0.0.0/8"] {
        bans.add(ban(text, Some(100)));
        let mut longer = ban(text, None);
        longer.reason = "again".to_owned();
        bans.add(longer);
    }
    assert_eq!(bans.len(), 4);
    assert!(
        bans.list(1_000)
            .iter()
            .all(|b| b.reason == "again" && b.until.is_none())
    );
    // Equal after normalisation counts as the same target.
    bans.add(ban("net:10.255.0.1/8", Some(5)));
    bans.add(ban("addr:::ffff:10.0.0.1", Some(5)));
    assert_eq!(bans.len(), 4);
    let left: Vec<String> = bans.list(10).iter().map(|b| b.target.to_string()).collect();
    assert_eq!(
        left,
        ["client:c", "user:u"],
        "addr and net replaced by the short bans"
    );
}

#[test]
fn remove_takes_away_exactly_one_ban() {
    let mut bans = Bans::new();
    for text in [
        "client:c",
        "user:u",
        "addr:10.0.0.1",
        "net:10.0.0.0/8",
        "net:fd00::/8",
    ] {
        bans.add(ban(text, None));
    }
    assert!(!bans.remove(&target("client:other")));
    assert!(
        bans.remove(&target("net:10.1.1.1/8")),
        "compared normalised"
    );
    assert!(!bans.remove(&target("net:10.0.0.0/8")));
    assert!(
        bans.remove(&target("addr:::ffff:10.0.0.1")),
        "compared canonical"
    );
    assert!(bans.remove(&target("client:c")));
    assert!(bans.remove(&target("user:u")));
    assert_eq!(bans.len(), 1);
    assert_eq!(bans.check(0, "c", Some("u"), ip("10.0.0.1")), None);
}

#[test]
fn list_is_sorted_by_target_whatever_the_insertion_order() {
    let texts = [
        "net:fd00::/8",
        "user:b",
        "addr:10.0.0.2",
        "client:z",
        "net:10.0.0.0/8",
        "client:a",
        "addr:10.0.0.1",
        "user:a",
    ];
    let mut forward = Bans::new();
    let mut backward = Bans::new();
    for text in texts {
        forward.add(ban(text, None));
    }
    for text in texts.iter().rev() {
        backward.add(ban(text, None));
    }
    let listed: Vec<String> = forward
        .list(0)
        .iter()
        .map(|b| b.target.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "client:a",
            "client:z",
            "user:a",
            "user:b",
            "addr:10.0.0.1",
            "addr:10.0.0.2",
            "net:10.0.0.0/8",
            "net:fd00::/8",
        ]
    );
    assert_eq!(forward.list(0), backward.list(0));
}

#[test]
fn ipv4_networks_match_by_prefix() {
    let mut bans = Bans::new();
    bans.add(ban("net:172.16.0.0/12", None));
    for (addr, banned) in [
        ("172.16.0.0", true),
        ("172.31.255.255", true),
        ("172.15.255.255", false),
        ("172.32.0.0", false),
        ("fd00::1", false),
    ] {
        assert_eq!(bans.check_addr(0, ip(addr)).is_some(), banned, "{addr}");
    }
}

#[test]
fn ipv6_networks_match_by_prefix() {
    let mut bans = Bans::new();
    bans.add(ban("net:2001:db8:abcd::/48", None));
    for (addr, banned) in [
        ("2001:db8:abcd::1", true),
        ("2001:db8:abcd:ffff:ffff:ffff:ffff:ffff", true),
        ("2001:db8:abce::", false),
        ("2001:db8:abcc:ffff::", false),
        ("10.0.0.1", false),
    ] {
        assert_eq!(bans.check_addr(0, ip(addr)).is_some(), banned, "{addr}");
    }
}

#[test]
fn ipv4_mapped_ipv6_peers_match_ipv4_bans() {
    let mut bans = Bans::new();
    bans.add(ban("addr:192.0.2.1", None));
    bans.add(ban("net:198.51.100.0/24", None));
    assert!(bans.check_addr(0, ip("::ffff:192.0.2.1")).is_some());
    assert!(bans.check_addr(0, ip("::ffff:198.51.100.200")).is_some());
    assert!(
        bans.check(0, "c", None, ip("::ffff:198.51.100.200"))
            .is_some()
    );
    assert_eq!(bans.check_addr(0, ip("::ffff:192.0.2.2")), None);
    // An IPv4-compatible (not mapped) address is a different, IPv6, address.
    assert_eq!(bans.check_addr(0, ip("::192.0.2.1")), None);
}

#[test]
fn bans_written_in_mapped_form_match_ipv4_peers() {
    let mut bans = Bans::new();
    bans.add(ban("addr:::ffff:192.0.2.1", None));
    bans.add(Ban {
        target: BanTarget::Network {
            addr: ip("::ffff:198.51.100.0"),
            prefix: 120,
        },
        until: None,
        reason: "built directly, normalised by add".to_owned(),
        created: 0,
    });
    assert!(bans.check_addr(0, ip("192.0.2.1")).is_some());
    assert!(bans.check_addr(0, ip("198.51.100.9")).is_some());
    assert!(bans.check_addr(0, ip("::ffff:198.51.100.9")).is_some());
}

#[test]
fn an_ipv6_network_covering_mapped_addresses_matches_ipv4_peers() {
    let mut bans = Bans::new();
    bans.add(ban("net:::/0", None));
    assert!(bans.check_addr(0, ip("10.0.0.1")).is_some());
    assert!(bans.check_addr(0, ip("2001:db8::1")).is_some());
}

#[test]
fn a_network_built_with_too_long_a_prefix_matches_nothing() {
    let mut bans = Bans::new();
    bans.add(Ban {
        target: BanTarget::Network {
            addr: ip("10.0.0.1"),
            prefix: 40,
        },
        until: None,
        reason: String::new(),
        created: 0,
    });
    assert_eq!(bans.check_addr(0, ip("10.0.0.1")), None);
}

fn config(max_connects: u32, window_ms: u64) -> FlappingConfig {
    FlappingConfig {
        max_connects,
        window_ms,
        ban_ms: 5_000,
    }
}

#[test]
fn one_connect_fewer_than_the_limit_is_not_flapping() {
    let mut flapping = Flapping::new(config(5, 1_000));
    for now in [0, 100, 200, 999] {
        assert_eq!(flapping.connect(now, "c"), None, "at {now}");
    }
}

#[test]
fn the_limit_within_the_window_bans_the_client_id() {
    let mut flapping = Flapping::new(config(5, 1_000));
    for now in [0, 100, 200, 300] {
        assert_eq!(flapping.connect(now, "c"), None);
    }
    let ban = flapping
        .connect(999, "c")
        .expect("fifth connect within 1000 ms");
    assert_eq!(
        ban,
        Ban {
            target: BanTarget::ClientId("c".to_owned()),
            until: Some(5_999),
            reason: "flapping: connected 5 times within 1000 ms".to_owned(),
            created: 999,
        }
    );
    // The count starts again after a ban.
    assert_eq!(flapping.connect(1_000, "c"), None);
}

#[test]
fn the_limit_spread_over_more_than_the_window_is_not_flapping() {
    let mut flapping = Flapping::new(config(5, 1_000));
    // The first connect is exactly one window old at the fifth: it no longer counts.
    for now in [0, 250, 500, 750, 1_000] {
        assert_eq!(flapping.connect(now, "c"), None, "at {now}");
    }
    // And a steady rate just below the threshold never bans.
    let mut flapping = Flapping::new(config(5, 1_000));
    for now in (0..100_000).step_by(251) {
        assert_eq!(flapping.connect(now, "c"), None, "at {now}");
    }
    // At 250 ms apart the fifth connect is within 1000 ms of the first.
    let mut flapping = Flapping::new(config(5, 1_001));
    let bans: Vec<u64> = (0..10u64)
        .map(|i| i * 250)
        .filter(|&now| flapping.connect(now, "c").is_some())
        .collect();
    assert_eq!(bans, [1_000, 2_250]);
}

#[test]
fn client_ids_are_counted_separately() {
    let mut flapping = Flapping::new(config(3, 1_000));
    assert_eq!(flapping.connect(0, "a"), None);
    assert_eq!(flapping.connect(0, "b"), None);
    assert_eq!(flapping.connect(1, "a"), None);
    assert_eq!(flapping.connect(1, "b"), None);
    let ban = flapping.connect(2, "a").expect("third connect of a");
    assert_eq!(ban.target, BanTarget::ClientId("a".to_owned()));
    assert!(flapping.connect(3, "b").is_some());
}

#[test]
fn zero_max_connects_turns_detection_off() {
    let mut flapping = Flapping::new(config(0, 1_000));
    for now in 0..100 {
        assert_eq!(flapping.connect(now, "c"), None);
    }
    assert_eq!(flapping.tracked(), 0);
}

#[test]
fn purge_forgets_clients_quiet_for_a_window() {
    let mut flapping = Flapping::new(config(3, 1_000));
    flapping.connect(0, "old");
    flapping.connect(500, "new");
    flapping.purge(999);
    assert_eq!(flapping.tracked(), 2);
    flapping.purge(1_000);
    assert_eq!(flapping.tracked(), 1);
    // "new" keeps its history.
    flapping.connect(600, "new");
    assert!(flapping.connect(700, "new").is_some());
}

#[test]
fn random_client_ids_cannot_grow_the_table_past_its_limit() {
    let mut flapping = Flapping::with_max_clients(config(3, 1_000), 100);
    for i in 0..10_000u64 {
        let long_id = format!("{i:x}").repeat(100);
        assert_eq!(flapping.connect(i / 100, &long_id), None);
        assert!(flapping.tracked() <= 100);
    }
    assert_eq!(flapping.tracked(), 100);
    // Tracked ids are still counted while the table is full.
    let mut flapping = Flapping::with_max_clients(config(3, 1_000), 2);
    flapping.connect(0, "a");
    flapping.connect(0, "b");
    assert_eq!(flapping.connect(1, "attacker"), None);
    flapping.connect(2, "a");
    assert!(flapping.connect(3, "a").is_some());
    // Once the old entries age out, new ids are tracked again.
    let mut flapping = Flapping::with_max_clients(config(2, 1_000), 1);
    flapping.connect(0, "a");
    assert_eq!(flapping.connect(5_000, "b"), None);
    assert!(flapping.connect(5_001, "b").is_some());
}
