//! The password file through its public API: round trips, errors, Mosquitto interop, timing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_access::password::{DEFAULT_ITERATIONS, PasswordError, PasswordFile};

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// Written by `mosquitto_passwd -b -c FILE alice secret` (Mosquitto 2.0.11).
const ALICE_FROM_MOSQUITTO: &str = "alice:$7$101$i8tpwWkccqObE3uF$PzcJIFtKN/r4D1+7UpvJB86VON0Sy+talS/hLUfPpUwfAQIUBCXU0+usD4ArQ9N9cVJLa5yG79jOD50fMoBIhQ==";

fn parse_error(text: &str) -> (usize, String) {
    match PasswordFile::parse(text) {
        Err(PasswordError::Parse { line, reason }) => (line, reason),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn set_save_load_verifies_the_same_passwords() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set("zed", b"zed's password").expect("valid user");
    file.set("amy", "pässwörd".as_bytes()).expect("valid user");
    file.set("bob", &[0, 255, b'\n', 7]).expect("valid user");
    file.save(&path).expect("save");

    let loaded = PasswordFile::load(&path).expect("load");
    assert_eq!(loaded.users().collect::<Vec<_>>(), ["amy", "bob", "zed"]);
    assert!(loaded.verify("zed", b"zed's password"));
    assert!(loaded.verify("amy", "pässwörd".as_bytes()));
    assert!(loaded.verify("bob", &[0, 255, b'\n', 7]));
    assert!(loaded.contains("amy"));
    assert!(!loaded.contains("carol"));
}

#[test]
fn saved_file_is_sorted_mosquitto_format_with_mode_0600() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set("b", b"1").expect("valid user");
    file.set("a", b"2").expect("valid user");
    file.save(&path).expect("save");

    let text = std::fs::read_to_string(&path).expect("read back");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for (line, user) in lines.iter().zip(["a", "b"]) {
        let prefix = format!("{user}:$7${DEFAULT_ITERATIONS}$");
        assert!(line.starts_with(&prefix), "{line}");
        let fields: Vec<&str> = line[prefix.len()..].split('$').collect();
        assert_eq!(fields.len(), 2, "{line}");
        assert_eq!(fields[0].len(), 16, "12-byte salt in base64: {line}");
        assert_eq!(fields[1].len(), 88, "64-byte hash in padded base64: {line}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(leftovers, ["passwd"], "no temporary file left behind");
}

#[test]
fn save_replaces_an_existing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("passwd");
    std::fs::write(&path, "old contents\n").expect("write");
    let mut file = PasswordFile::new();
    file.set("amy", b"pw").expect("valid user");
    file.save(&path).expect("save");
    assert!(
        PasswordFile::load(&path)
            .expect("load")
            .verify("amy", b"pw")
    );
}

#[test]
fn save_to_a_missing_directory_is_a_write_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no/such/dir/passwd");
    match PasswordFile::new().save(&path) {
        Err(e @ PasswordError::Write { .. }) => {
            assert!(
                e.to_string().starts_with("cannot write password file"),
                "{e}"
            );
        }
        other => panic!("expected a write error, got {other:?}"),
    }
}

#[test]
fn load_of_a_missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    match PasswordFile::load(&dir.path().join("absent")) {
        Err(PasswordError::Read { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn wrong_password_and_unknown_user_fail() {
    let mut file = PasswordFile::new();
    file.set("amy", b"right").expect("valid user");
    assert!(!file.verify("amy", b"wrong"));
    assert!(!file.verify("amy", b""));
    assert!(!file.verify("amy", b"right "));
    assert!(!file.verify("bob", b"right"));
    assert!(!file.verify("", b"right"));
    assert!(!PasswordFile::new().verify("amy", b"right"));
}

#[test]
fn remove_forgets_the_user() {
    let mut file = PasswordFile::new();
    file.set("amy", b"pw").expect("valid user");
    assert!(file.verify("amy", b"pw"));
    assert!(file.remove("amy"));
    assert!(!file.remove("amy"));
    assert!(
        !file.verify("amy", b"pw"),
        "a cached success does not outlive the user"
    );
    assert_eq!(file.users().count(), 0);
}

#[test]
fn verify_twice_is_right_both_times_and_a_new_password_invalidates_the_cache() {
    let mut file = PasswordFile::new();
    file.set("amy", b"first").expect("valid user");
    assert!(file.verify("amy", b"first"));
    assert!(file.verify("amy", b"first"));
    assert!(!file.verify("amy", b"second"));
    file.set("amy", b"second").expect("valid user");
    assert!(
        !file.verify("amy", b"first"),
        "the old password is no longer accepted"
    );
    assert!(file.verify("amy", b"second"));
    assert!(file.verify("amy", b"second"));
}

#[test]
fn comments_blank_lines_and_crlf_are_accepted() {
    let text = format!("# users\n\n   \n{ALICE_FROM_MOSQUITTO}\r\n# end\n");
    let file = PasswordFile::parse(&text).expect("valid file");
    assert_eq!(file.users().collect::<Vec<_>>(), ["alice"]);
    assert!(file.verify("alice", b"secret"));
}

#[test]
fn parse_errors_name_the_line() {
    let hash = ALICE_FROM_MOSQUITTO.split_once(':').expect("user:hash").1;
    let salt_and_hash = &hash["$7$101$".len()..];
    let cases: Vec<(String, usize, &str)> = vec![
        (format!("# c\nalice{hash}\n"), 2, "no `:`"),
        (format!(":{hash}"), 1, "empty"),
        (
            format!("a:{hash}\n\nb:{hash}\na:{hash}\n"),
            4,
            "already listed on line 1",
        ),
        ("a:secret\n".to_owned(), 1, "plain text"),
        (
            "\n\nb:$6$abc$def\n".to_owned(),
            3,
            "`$6$` (salted SHA-512 of Mosquitto 1.6 and earlier)",
        ),
        ("a:$2b$10$xyz\n".to_owned(), 1, "unrecognised"),
        (
            "a:$7$101$c2FsdA==\n".to_owned(),
            1,
            "expected `$7$<iterations>",
        ),
        (
            format!("a:$7$0${salt_and_hash}"),
            1,
            "not a positive integer",
        ),
        (
            format!("a:$7$x${salt_and_hash}"),
            1,
            "not a positive integer",
        ),
        (
            "a:$7$10$!!!$AAAA\n".to_owned(),
            1,
            "salt is not valid base64",
        ),
        ("a:$7$10$$AAAA\n".to_owned(), 1, "salt is empty"),
        (
            "a:$7$10$c2FsdA==$AAAA\n".to_owned(),
            1,
            "hash is 3 bytes, expected 64",
        ),
        (
            "a:$7$10$c2FsdA==$A\n".to_owned(),
            1,
            "hash is not valid base64",
        ),
        (format!("a\u{1}b:{hash}"), 1, "control character"),
    ];
    for (text, line, needle) in cases {
        let (got_line, reason) = parse_error(&text);
        assert_eq!(got_line, line, "{text:?}: {reason}");
        assert!(
            reason.contains(needle),
            "{text:?}: {reason:?} lacks {needle:?}"
        );
    }
}

#[test]
fn unsupported_formats_say_what_is_supported() {
    let error = PasswordFile::parse("# x\n\nalice:$6$salt$hash\n").expect_err("unsupported");
    let message = error.to_string();
    assert!(message.starts_with("password file line 3: "), "{message}");
    assert!(
        message.contains("only supported format is `$7$`"),
        "{message}"
    );
}

#[test]
fn parse_errors_do_not_quote_the_secret() {
    let message = PasswordFile::parse("amy:hunter2\nbob:$hunter3$\n")
        .expect_err("plain text")
        .to_string();
    assert!(!message.contains("hunter2"), "{message}");
    let message = PasswordFile::parse("bob:$hunter3$\n")
        .expect_err("unknown")
        .to_string();
    assert!(!message.contains("hunter3"), "{message}");
}

#[test]
fn set_refuses_user_names_the_file_cannot_hold() {
    let mut file = PasswordFile::new();
    for user in ["", "a:b", "a\nb", "a\rb", "#admin"] {
        match file.set(user, b"pw") {
            Err(PasswordError::InvalidUser { user: refused, .. }) => assert_eq!(refused, user),
            other => panic!("{user:?}: expected InvalidUser, got {other:?}"),
        }
    }
    assert_eq!(file.users().count(), 0);
    file.set("a#b c", b"pw")
        .expect("`#` inside and spaces are fine");
}

#[test]
fn debug_lists_users_but_no_hashes() {
    let file = PasswordFile::parse(ALICE_FROM_MOSQUITTO).expect("valid file");
    let debug = format!("{file:?}");
    assert!(debug.contains("alice"), "{debug}");
    assert!(!debug.contains("i8tpwWkccqObE3uF"), "{debug}");
    assert!(!debug.contains("PzcJIFtKN"), "{debug}");
}

#[test]
fn a_line_written_by_mosquitto_passwd_verifies() {
    let file = PasswordFile::parse(ALICE_FROM_MOSQUITTO).expect("valid file");
    assert!(file.verify("alice", b"secret"));
    assert!(!file.verify("alice", b"Secret"));
}

/// Runs `mosquitto_passwd` with `args`; false (after a note) if it is not installed.
fn mosquitto_passwd(args: &[&str]) -> bool {
    if !Path::new(MOSQUITTO_PASSWD).exists() {
        eprintln!("note: {MOSQUITTO_PASSWD} is absent (Debian package `mosquitto`); skipped");
        return false;
    }
    let status = Command::new(MOSQUITTO_PASSWD)
        .args(args)
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd {args:?}: {status}");
    true
}

#[test]
fn a_file_written_by_mosquitto_passwd_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("passwd");
    let file = path.to_str().expect("temp path is UTF-8");
    if !mosquitto_passwd(&["-b", "-c", file, "alice", "secret"]) {
        return;
    }
    assert!(mosquitto_passwd(&["-b", file, "bob", "p:w $7$ ünï"]));
    let loaded = PasswordFile::load(&path).expect("mosquitto's file loads");
    assert_eq!(loaded.users().collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(loaded.verify("alice", b"secret"));
    assert!(loaded.verify("bob", "p:w $7$ ünï".as_bytes()));
    assert!(!loaded.verify("bob", b"secret"));
}

#[test]
fn a_file_written_here_keeps_working_after_mosquitto_passwd_edits_it() {
    // mosquitto_passwd rewrites every line it reads, so it must parse ours; then we read its
    // output back, with our hash unchanged.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("passwd");
    let mut ours = PasswordFile::new();
    ours.set("carol", b"carol's").expect("valid user");
    ours.save(&path).expect("save");
    let file = path.to_str().expect("temp path is UTF-8");
    if !mosquitto_passwd(&["-b", file, "dave", "dave's"]) {
        return;
    }
    let loaded = PasswordFile::load(&path).expect("load");
    assert_eq!(loaded.users().collect::<Vec<_>>(), ["carol", "dave"]);
    assert!(loaded.verify("carol", b"carol's"));
    assert!(loaded.verify("dave", b"dave's"));
}

/// The shortest of a few runs of `f`: scheduling noise only ever adds time.
fn fastest(mut f: impl FnMut()) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("five runs")
}

#[test]
fn an_unknown_user_takes_as_long_as_a_wrong_password() {
    // The precise check (one PBKDF2 run either way) is a unit test in the module; this one
    // guards the order of magnitude: without a derivation an unknown user would take
    // microseconds against milliseconds.
    let mut file = PasswordFile::new();
    file.set("amy", b"right").expect("valid user");
    let wrong_password = fastest(|| assert!(!file.verify("amy", b"wrong")));
    let unknown_user = fastest(|| assert!(!file.verify("nobody", b"wrong")));
    assert!(
        unknown_user * 50 > wrong_password,
        "unknown user {unknown_user:?}, wrong password {wrong_password:?}"
    );
}
