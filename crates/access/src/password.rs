//! The password file: one `user:hash` per line, hashed with PBKDF2-HMAC-SHA512.
//!
//! The hash is written in Mosquitto 2's `$7$` format, `$7$<iterations>$<salt>$<hash>` with the
//! salt and the 64-byte derived key in standard base64 with padding, so that a file written by
//! `mosquitto_passwd` works here and the other way round. Blank lines and lines starting with
//! `#` are ignored when reading; [`PasswordFile::save`] writes only the entries, sorted by user.
//!
//! [`PasswordFile::verify`] costs one PBKDF2 derivation whether or not the user exists, and
//! remembers recent successes so that a reconnect storm does not cost one derivation per
//! client. [`passwd_command`] is what `shoal passwd ...` runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest;
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

/// PBKDF2 iterations for the hashes this crate writes.
///
/// Slow enough to make offline guessing against a stolen file costly (each guess costs 20,000
/// HMAC-SHA512 rounds), fast enough that a reconnect storm on a small machine is not a CPU
/// outage: a few milliseconds per derivation on a current core, and the cache in
/// [`PasswordFile::verify`] means a client that reconnects with the right password costs one
/// SHA-256 instead. Files written by `mosquitto_passwd` use its own count (101 in Mosquitto
/// 2.0); those hashes keep it until the password is set again here.
pub const DEFAULT_ITERATIONS: u32 = 20_000;

/// Most users [`PasswordFile::verify`] remembers a success for; when full, an arbitrary entry
/// is dropped to make room.
pub const VERIFY_CACHE_CAPACITY: usize = 10_000;

/// Bytes of random salt in the hashes this crate writes (as `mosquitto_passwd` does).
const SALT_LEN: usize = 12;

/// Bytes of derived key: one SHA-512 output, as Mosquitto stores it.
const HASH_LEN: usize = digest::SHA512_OUTPUT_LEN;

/// What the verification cache stores per user.
type Digest = [u8; digest::SHA256_OUTPUT_LEN];

/// The hash formats this crate reads, for parse errors.
const SUPPORTED: &str = "the only supported format is `$7$` (PBKDF2-SHA512, as written by \
                         `mosquitto_passwd` from Mosquitto 2 and by `shoal passwd add`)";

/// `DEFAULT_ITERATIONS` as the type ring takes.
const DEFAULT_ITERATIONS_NZ: NonZeroU32 = match NonZeroU32::new(DEFAULT_ITERATIONS) {
    Some(n) => n,
    None => panic!("DEFAULT_ITERATIONS is not zero"),
};

/// Reading, parsing or writing a password file, or changing an entry, failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file could not be read.
    #[error("cannot read password file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line of the file is not a valid entry. The reason never quotes the hash.
    #[error("password file line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write password file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A user name given to [`PasswordFile::set`] cannot be stored in the file.
    #[error("invalid user name {user:?}: {reason}")]
    InvalidUser {
        /// The refused name.
        user: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl Entry {
    /// A new hash of `password` with a fresh random salt and [`DEFAULT_ITERATIONS`].
    fn new(password: &[u8]) -> Self {
        let salt: [u8; SALT_LEN] = random();
        let mut hash = [0; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            DEFAULT_ITERATIONS_NZ,
            &salt,
            password,
            &mut hash,
        );
        Self {
            iterations: DEFAULT_ITERATIONS_NZ,
            salt: salt.to_vec(),
            hash,
        }
    }

    /// Parses the part after `user:`.
    fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix("$7$") else {
            // Never quote the text: it may be a plain-text password.
            let described = if text.starts_with("$6$") {
                "`$6$` (salted SHA-512 of Mosquitto 1.6 and earlier)"
            } else if text.starts_with('$') {
                "an unrecognised `$<id>$` one"
            } else {
                "plain text or an unknown one (it does not start with `$`)"
            };
            return Err(format!(
                "unsupported hash format {described}; {SUPPORTED}; set the password again with \
                 `shoal passwd add`"
            ));
        };
        let mut parts = rest.split('$');
        let (Some(iterations), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected `$7$<iterations>$<base64 salt>$<base64 hash>`".to_owned());
        };
        let iterations = iterations
            .parse::<NonZeroU32>()
            .map_err(|_| format!("iteration count {iterations:?} is not a positive integer"))?;
        let salt = BASE64
            .decode(salt)
            .map_err(|e| format!("the salt is not valid base64: {e}"))?;
        if salt.is_empty() {
            return Err("the salt is empty".to_owned());
        }
        let hash = BASE64
            .decode(hash)
            .map_err(|e| format!("the hash is not valid base64: {e}"))?;
        let hash: [u8; HASH_LEN] = hash.as_slice().try_into().map_err(|_| {
            format!(
                "the hash is {} bytes, expected {HASH_LEN} (PBKDF2-SHA512)",
                hash.len()
            )
        })?;
        Ok(Self {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `password` derives to this hash; constant-time in the comparison.
    fn matches(&self, password: &[u8]) -> bool {
        #[cfg(test)]
        tests::count_derivation();
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA512,
            self.iterations,
            &self.salt,
            password,
            &self.hash,
        )
        .is_ok()
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$7${}${}${}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.hash)
        )
    }
}

/// A set of users and their password hashes.
///
/// Cheap to verify against repeatedly: successes are cached (see [`PasswordFile::verify`]).
/// Share it behind an `Arc` and replace the whole value on reload; a new value starts with an
/// empty cache.
pub struct PasswordFile {
    /// Sorted by user, so that [`PasswordFile::users`] and [`PasswordFile::save`] are sorted.
    users: BTreeMap<String, Entry>,
    /// How many entries use each iteration count, to give unknown users the common cost.
    iteration_counts: BTreeMap<NonZeroU32, usize>,
    /// Random salt and hash that unknown users are verified against (never matches in
    /// practice, and the result is ignored anyway).
    dummy_salt: [u8; SALT_LEN],
    dummy_hash: [u8; HASH_LEN],
    /// Random per-value key mixed into the cached digests.
    cache_key: [u8; 32],
    /// User to SHA-256(cache_key || password) of their last successful verification.
    cache: Mutex<HashMap<String, Digest>>,
}

impl PasswordFile {
    /// An empty password file.
    pub fn new() -> Self {
        Self {
            users: BTreeMap::new(),
            iteration_counts: BTreeMap::new(),
            dummy_salt: random(),
            dummy_hash: random(),
            cache_key: random(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Parses the text of a password file.
    ///
    /// Blank lines and lines starting with `#` are skipped; trailing whitespace (including a
    /// `\r`) is ignored. Every other line must be `user:$7$...`. A user name that is empty,
    /// starts with `#` or holds a control character, a user listed twice, and any other hash
    /// format are errors naming the line.
    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        let mut file = Self::new();
        let mut seen_on: HashMap<&str, usize> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let error = |reason: String| PasswordError::Parse {
                line: number,
                reason,
            };
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(error("expected `user:hash`, found no `:`".to_owned()));
            };
            if let Err(reason) = check_user(user) {
                return Err(error(format!("user name {user:?}: {reason}")));
            }
            if let Some(first) = seen_on.insert(user, number) {
                return Err(error(format!(
                    "user {user:?} is already listed on line {first}"
                )));
            }
            let entry =
                Entry::parse(hash).map_err(|reason| error(format!("user {user:?}: {reason}")))?;
            file.insert(user.to_owned(), entry);
        }
        Ok(file)
    }

    /// Reads and parses the password file at `path`.
    pub fn load(path: &Path) -> Result<Self, PasswordError> {
        let text = fs::read_to_string(path).map_err(|source| PasswordError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Writes the file to `path` atomically: a temporary file in the same directory, synced,
    /// then renamed over `path`. On unix the file has mode 0600. Users are written in sorted
    /// order, one `user:hash` line each; comments of a loaded file are not kept.
    pub fn save(&self, path: &Path) -> Result<(), PasswordError> {
        let write_error = |source| PasswordError::Write {
            path: path.to_owned(),
            source,
        };
        let file_name = path.file_name().ok_or_else(|| {
            write_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not name a file",
            ))
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = dir.join(temp_name);

        let mut text = String::new();
        for (user, entry) in &self.users {
            text.push_str(user);
            text.push(':');
            text.push_str(&entry.to_string());
            text.push('\n');
        }
        let result = write_new_file(&temp, text.as_bytes())
            .and_then(|()| fs::rename(&temp, path))
            .and_then(|()| sync_dir(dir));
        if result.is_err() {
            // Best effort: the error that matters is the one returned.
            let _ = fs::remove_file(&temp);
        }
        result.map_err(write_error)
    }

    /// Adds `user`, or changes their password, hashing `password` with a fresh random salt and
    /// [`DEFAULT_ITERATIONS`]. Refuses ([`PasswordError::InvalidUser`]) a name that is empty,
    /// holds `:` or a control character (such as a newline), or starts with `#`, since the
    /// file could not be read back.
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), PasswordError> {
        check_user(user).map_err(|reason| PasswordError::InvalidUser {
            user: user.to_owned(),
            reason,
        })?;
        self.insert(user.to_owned(), Entry::new(password));
        Ok(())
    }

    /// Removes `user`; false if they were not in the file.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(entry) = self.users.remove(user) else {
            return false;
        };
        self.forget_iterations(entry.iterations);
        self.cache_lock().remove(user);
        true
    }

    /// The users, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether `user` is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `password` is `user`'s password.
    ///
    /// Does the same work whether or not `user` exists: an unknown user is checked against a
    /// dummy hash with the iteration count most entries of the file use
    /// ([`DEFAULT_ITERATIONS`] when empty), so timing does not tell which users exist.
    ///
    /// Successes are remembered (at most [`VERIFY_CACHE_CAPACITY`] users) as a SHA-256 of a
    /// random per-value key and the password; a later call with the same password compares
    /// that digest in constant time and skips PBKDF2. Failures are never cached; a different
    /// password for a cached user runs PBKDF2 as usual. [`PasswordFile::set`] and
    /// [`PasswordFile::remove`] forget the user's entry.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(entry) = self.users.get(user) else {
            let dummy = Entry {
                iterations: self.common_iterations(),
                salt: self.dummy_salt.to_vec(),
                hash: self.dummy_hash,
            };
            let _ = dummy.matches(password);
            return false;
        };
        if self.verify_cached(user, password) {
            return true;
        }
        if !entry.matches(password) {
            return false;
        }
        let remembered = self.remembered(password);
        let mut cache = self.cache_lock();
        if cache.len() >= VERIFY_CACHE_CAPACITY
            && !cache.contains_key(user)
            && let Some(evicted) = cache.keys().next().cloned()
        {
            cache.remove(&evicted);
        }
        cache.insert(user.to_owned(), remembered);
        true
    }

    /// Whether `password` is the one `user` last logged in with, as the cache remembers it:
    /// a SHA-256 and a comparison, no PBKDF2. False says nothing (not remembered, or
    /// wrong); only [`PasswordFile::verify`] tells.
    pub fn verify_cached(&self, user: &str, password: &[u8]) -> bool {
        if !self.users.contains_key(user) {
            return false;
        }
        let remembered = self.remembered(password);
        self.cache_lock()
            .get(user)
            .is_some_and(|cached| constant_time_eq(cached, &remembered))
    }

    /// Inserts or replaces an entry, keeping the iteration counts and the cache right.
    fn insert(&mut self, user: String, entry: Entry) {
        *self.iteration_counts.entry(entry.iterations).or_default() += 1;
        self.cache_lock().remove(&user);
        if let Some(old) = self.users.insert(user, entry) {
            self.forget_iterations(old.iterations);
        }
    }

    /// Counts one entry fewer with `iterations`.
    fn forget_iterations(&mut self, iterations: NonZeroU32) {
        if let Some(count) = self.iteration_counts.get_mut(&iterations) {
            *count -= 1;
            if *count == 0 {
                self.iteration_counts.remove(&iterations);
            }
        }
    }

    /// The iteration count most entries use; the highest of those tied; the default if none.
    fn common_iterations(&self) -> NonZeroU32 {
        self.iteration_counts
            .iter()
            .max_by_key(|&(&iterations, &count)| (count, iterations))
            .map_or(DEFAULT_ITERATIONS_NZ, |(&iterations, _)| iterations)
    }

    /// What the cache stores for `password`.
    fn remembered(&self, password: &[u8]) -> Digest {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(&self.cache_key);
        context.update(password);
        let mut out = [0; digest::SHA256_OUTPUT_LEN];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    /// The cache, even if a panic elsewhere poisoned the lock (its map is always consistent:
    /// no code panics while holding it).
    fn cache_lock(&self) -> MutexGuard<'_, HashMap<String, Digest>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for PasswordFile {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PasswordFile {
    /// Lists the users only: hashes, salts and cache stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why `user` cannot be stored in a password file, if it cannot.
fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("it is empty")
    } else if user.contains(':') {
        Err("it contains `:`")
    } else if user.chars().any(char::is_control) {
        Err("it contains a control character")
    } else if user.starts_with('#') {
        Err("it starts with `#`, which would make its line a comment")
    } else {
        Ok(())
    }
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator works once the system is up");
    bytes
}

/// Equality of two digests in time independent of where they differ.
fn constant_time_eq(a: &Digest, b: &Digest) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// Creates `path` (which must not exist; a stale one is removed first), mode 0600 on unix,
/// writes `bytes` and syncs it.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename in `dir` durable (unix); nothing elsewhere.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// What `shoal passwd ...` runs; `args` are the words after `passwd`. Returns the exit code:
/// 0 on success, 1 on an error (printed as `shoal passwd: <error>` on stderr), 2 on a usage
/// error.
///
/// - `add FILE USER`: adds USER or changes their password, creating FILE if missing. On a
///   terminal the password is asked twice with echo off; otherwise one line is read from
///   stdin (without its trailing `\n` or `\r\n`). An empty password is refused.
/// - `remove FILE USER`: removes USER; an error if absent.
/// - `list FILE`: prints the users, one per line.
pub fn passwd_command(args: &[String]) -> i32 {
    let stdin = io::stdin();
    let is_tty = stdin_is_tty();
    passwd_with_io(
        args,
        &mut stdin.lock(),
        is_tty,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

const USAGE: &str = "\
usage: shoal passwd add FILE USER     add USER or change their password (asked on a terminal,
                                     or one line read from stdin); creates FILE if missing
       shoal passwd remove FILE USER  remove USER
       shoal passwd list FILE         print the users, one per line
";

/// [`passwd_command`] with its input, output and terminal-ness given.
fn passwd_with_io(
    args: &[String],
    input: &mut dyn BufRead,
    is_tty: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["add", file, user] => add(Path::new(file), user, input, is_tty, err),
        ["remove", file, user] => remove(Path::new(file), user),
        ["list", file] => list(Path::new(file), out),
        ["help" | "-h" | "--help"] => {
            let _ = out.write_all(USAGE.as_bytes());
            return 0;
        }
        _ => {
            let _ = err.write_all(USAGE.as_bytes());
            return 2;
        }
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "shoal passwd: {message}");
            1
        }
    }
}

fn add(
    path: &Path,
    user: &str,
    input: &mut dyn BufRead,
    is_tty: bool,
    err: &mut dyn Write,
) -> Result<(), String> {
    check_user(user).map_err(|reason| format!("invalid user name {user:?}: {reason}"))?;
    let mut file = match PasswordFile::load(path) {
        Ok(file) => file,
        Err(PasswordError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            PasswordFile::new()
        }
        Err(e) => return Err(e.to_string()),
    };
    let password = if is_tty {
        let _echo_off =
            EchoOff::stdin().map_err(|e| format!("cannot turn off echo on the terminal: {e}"))?;
        prompt_twice(input, err)?
    } else {
        read_line(input).map_err(|e| format!("cannot read the password from stdin: {e}"))?
    };
    if password.is_empty() {
        return Err("empty password refused".to_owned());
    }
    file.set(user, &password).map_err(|e| e.to_string())?;
    file.save(path).map_err(|e| e.to_string())
}

fn remove(path: &Path, user: &str) -> Result<(), String> {
    let mut file = PasswordFile::load(path).map_err(|e| e.to_string())?;
    if !file.remove(user) {
        return Err(format!("user {user:?} is not in {}", path.display()));
    }
    file.save(path).map_err(|e| e.to_string())
}

fn list(path: &Path, out: &mut dyn Write) -> Result<(), String> {
    let file = PasswordFile::load(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for user in file.users() {
        text.push_str(user);
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// Asks for the password twice on `err` and reads both answers from `input`; refuses a
/// mismatch. The caller turns echo off.
fn prompt_twice(input: &mut dyn BufRead, err: &mut dyn Write) -> Result<Vec<u8>, String> {
    let mut ask = |prompt: &str| -> Result<Vec<u8>, String> {
        let _ = write!(err, "{prompt}");
        let _ = err.flush();
        let answer = read_line(input).map_err(|e| format!("cannot read the password: {e}"));
        // Echo is off, so the newline the user typed was not shown.
        let _ = writeln!(err);
        answer
    };
    let first = ask("Password: ")?;
    let second = ask("Reenter password: ")?;
    if first != second {
        return Err("passwords do not match".to_owned());
    }
    Ok(first)
}

/// One line of `input` without its `\n` or `\r\n`.
fn read_line(input: &mut dyn BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(unix)]
fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor; any value of it is allowed.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

#[cfg(not(unix))]
fn stdin_is_tty() -> bool {
    false
}

/// Echo turned off on the terminal on stdin until dropped, when the previous settings come
/// back (also on an error or a panic in between).
#[cfg(unix)]
struct EchoOff {
    saved: libc::termios,
}

#[cfg(unix)]
impl EchoOff {
    fn stdin() -> io::Result<Self> {
        let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr writes a whole termios through the pointer, which is valid for it.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: tcgetattr returned 0, so it filled the value in.
        let saved = unsafe { saved.assume_init() };
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: `quiet` is a valid termios obtained from tcgetattr.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { saved })
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: `saved` is the valid termios tcgetattr returned for this descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// Without termios there is no way to hide the password: refuse, and let the user pipe it.
#[cfg(not(unix))]
struct EchoOff;

#[cfg(not(unix))]
impl EchoOff {
    fn stdin() -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not supported on this platform; pipe the password on stdin",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Cursor;

    use super::*;

    thread_local! {
        static DERIVATIONS: Cell<usize> = const { Cell::new(0) };
    }

    /// Called by every PBKDF2 run in this thread.
    pub(super) fn count_derivation() {
        DERIVATIONS.with(|d| d.set(d.get() + 1));
    }

    fn derivations() -> usize {
        DERIVATIONS.with(Cell::get)
    }

    fn run(args: &[&str], input: &str, is_tty: bool) -> (i32, String, String) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = passwd_with_io(
            &args,
            &mut Cursor::new(input.as_bytes()),
            is_tty,
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).expect("test output is UTF-8"),
            String::from_utf8(err).expect("test output is UTF-8"),
        )
    }

    #[test]
    fn unknown_user_costs_one_derivation_like_a_known_one() {
        let mut file = PasswordFile::new();
        file.set("alice", b"right").expect("valid user");
        let before = derivations();
        assert!(!file.verify("alice", b"wrong"));
        let known = derivations() - before;
        let before = derivations();
        assert!(!file.verify("mallory", b"wrong"));
        let unknown = derivations() - before;
        assert_eq!((known, unknown), (1, 1));
    }

    #[test]
    fn unknown_user_costs_the_iterations_most_entries_use() {
        let mut file = PasswordFile::parse(
            "a:$7$101$i8tpwWkccqObE3uF$PzcJIFtKN/r4D1+7UpvJB86VON0Sy+talS/hLUfPpUwfAQIUBCXU0+usD4ArQ9N9cVJLa5yG79jOD50fMoBIhQ==\n",
        )
        .expect("valid file");
        assert_eq!(file.common_iterations().get(), 101);
        file.set("b", b"x").expect("valid user");
        file.set("c", b"x").expect("valid user");
        assert_eq!(file.common_iterations(), DEFAULT_ITERATIONS_NZ);
        assert!(file.remove("b") && file.remove("c"));
        assert_eq!(file.common_iterations().get(), 101);
        assert!(file.remove("a"));
        assert_eq!(file.common_iterations(), DEFAULT_ITERATIONS_NZ);
    }

    #[test]
    fn cache_hit_skips_pbkdf2_and_a_wrong_password_does_not() {
        let mut file = PasswordFile::new();
        file.set("alice", b"right").expect("valid user");
        assert!(file.verify("alice", b"right"));
        let before = derivations();
        assert!(file.verify("alice", b"right"));
        assert_eq!(
            derivations() - before,
            0,
            "second success comes from the cache"
        );
        assert!(!file.verify("alice", b"wrong"));
        assert_eq!(derivations() - before, 1, "a wrong password is derived");
        assert!(
            file.verify("alice", b"right"),
            "a failure does not evict the success"
        );
        assert_eq!(derivations() - before, 1);
    }

    #[test]
    fn cache_stays_bounded() {
        let mut file = PasswordFile::new();
        file.insert(
            "u".to_owned(),
            Entry {
                iterations: NonZeroU32::MIN,
                salt: vec![1],
                hash: [0; HASH_LEN],
            },
        );
        {
            let mut cache = file.cache_lock();
            for i in 0..VERIFY_CACHE_CAPACITY {
                cache.insert(format!("other{i}"), [0; 32]);
            }
        }
        let mut hash = [0; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::MIN,
            &[1],
            b"pw",
            &mut hash,
        );
        file.users.get_mut("u").expect("just inserted").hash = hash;
        assert!(file.verify("u", b"pw"));
        let cache = file.cache_lock();
        assert_eq!(cache.len(), VERIFY_CACHE_CAPACITY);
        assert!(cache.contains_key("u"));
    }

    #[test]
    fn add_reads_one_line_from_a_pipe_and_list_prints_sorted_users() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("passwd");
        let file = path.to_str().expect("temp path is UTF-8");
        assert_eq!(run(&["add", file, "zed"], "zpass\n", false).0, 0);
        assert_eq!(run(&["add", file, "amy"], "apass\r\n", false).0, 0);
        assert_eq!(run(&["add", file, "bob"], "no newline", false).0, 0);
        let loaded = PasswordFile::load(&path).expect("saved file loads");
        assert!(loaded.verify("zed", b"zpass"));
        assert!(loaded.verify("amy", b"apass"));
        assert!(loaded.verify("bob", b"no newline"));
        assert_eq!(
            run(&["list", file], "", false),
            (0, "amy\nbob\nzed\n".to_owned(), String::new())
        );
    }

    #[test]
    fn add_changes_an_existing_password() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("passwd");
        let file = path.to_str().expect("temp path is UTF-8");
        assert_eq!(run(&["add", file, "amy"], "old\n", false).0, 0);
        assert_eq!(run(&["add", file, "amy"], "new\n", false).0, 0);
        let loaded = PasswordFile::load(&path).expect("saved file loads");
        assert!(!loaded.verify("amy", b"old"));
        assert!(loaded.verify("amy", b"new"));
    }

    #[test]
    fn add_refuses_an_empty_password_and_a_bad_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("passwd");
        let file = path.to_str().expect("temp path is UTF-8");
        let (code, _, err) = run(&["add", file, "amy"], "\n", false);
        assert_eq!(code, 1);
        assert_eq!(err, "shoal passwd: empty password refused\n");
        let (code, _, err) = run(&["add", file, "amy"], "", false);
        assert_eq!(code, 1);
        assert_eq!(err, "shoal passwd: empty password refused\n");
        let (code, _, err) = run(&["add", file, "a:b"], "pw\n", false);
        assert_eq!(code, 1);
        assert!(
            err.starts_with("shoal passwd: invalid user name \"a:b\""),
            "{err}"
        );
        assert!(!path.exists(), "nothing written");
    }

    #[test]
    fn remove_of_an_absent_user_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("passwd");
        let file = path.to_str().expect("temp path is UTF-8");
        assert_eq!(run(&["add", file, "amy"], "pw\n", false).0, 0);
        let (code, _, err) = run(&["remove", file, "bob"], "", false);
        assert_eq!(code, 1);
        assert!(err.contains("user \"bob\" is not in"), "{err}");
        assert_eq!(run(&["remove", file, "amy"], "", false).0, 0);
        assert_eq!(
            run(&["list", file], "", false),
            (0, String::new(), String::new())
        );
    }

    #[test]
    fn missing_file_is_an_error_for_list_and_remove() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent");
        let file = path.to_str().expect("temp path is UTF-8");
        let (code, _, err) = run(&["list", file], "", false);
        assert_eq!(code, 1);
        assert!(
            err.starts_with("shoal passwd: cannot read password file"),
            "{err}"
        );
        assert_eq!(run(&["remove", file, "amy"], "", false).0, 1);
    }

    #[test]
    fn bad_arguments_print_usage_and_exit_2() {
        for args in [
            &[][..],
            &["add", "f"],
            &["list"],
            &["frobnicate", "f"],
            &["list", "f", "x"],
        ] {
            let (code, out, err) = run(args, "", false);
            assert_eq!(code, 2, "{args:?}");
            assert!(out.is_empty());
            assert!(
                err.starts_with("usage: shoal passwd add"),
                "{args:?}: {err}"
            );
        }
        let (code, out, _) = run(&["--help"], "", false);
        assert_eq!(code, 0);
        assert!(out.starts_with("usage:"));
    }

    #[test]
    fn prompt_asks_twice_and_refuses_a_mismatch() {
        let mut err = Vec::new();
        let password = prompt_twice(&mut Cursor::new(b"s3cret\ns3cret\n"), &mut err);
        assert_eq!(password, Ok(b"s3cret".to_vec()));
        assert_eq!(err, b"Password: \nReenter password: \n");
        let mismatch = prompt_twice(&mut Cursor::new(b"one\ntwo\n"), &mut Vec::new());
        assert_eq!(mismatch, Err("passwords do not match".to_owned()));
    }
}
