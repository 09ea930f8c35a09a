//! Errors of the store: sled's own failures, records that fail to decode (naming their tree
//! and key), records that cannot be encoded, and failed flushes.

use std::fmt;
use std::io;
use std::sync::Arc;

use shoal_codec::StringError;

/// Why an operation of the [`Store`](crate::Store) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed: an IO error, or sled found its own files corrupt (its log is
    /// checksummed). Usually fatal for the node.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A record was read but does not decode: the bytes are not what this version writes.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    /// A record cannot be encoded (a field too long for its length prefix); nothing was
    /// written. A bug in the caller, which built a record MQTT cannot carry.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being written: "session", "outbound message", "retained message".
        what: &'static str,
        /// Why.
        #[source]
        source: EncodeRecordError,
    },
    /// The shared flush that this caller waited for failed; every waiter of that flush
    /// gets the same error. Writes made before it are not known to be durable, and every
    /// later flush fails too: the node must restart from what is on disk.
    #[error("flush failed: {0}")]
    Flush(Arc<sled::Error>),
    /// The flusher thread has stopped (it panicked): no flush can be waited for.
    #[error("the flusher thread has stopped")]
    FlusherStopped,
    /// An earlier write failed (a full disk): sled may hang on its next write or flush, so
    /// the store takes none until the node restarts.
    #[error("an earlier write failed; the store takes no more writes until the node restarts")]
    Broken,
    /// At open: sled's log file could not be opened to be synced, or the folder not
    /// synced.
    #[error("cannot prepare sled's files for fsync: {0}")]
    Sync(#[source] io::Error),
    /// The flusher thread could not be started when the store was opened.
    #[error("cannot start the flusher thread: {0}")]
    Spawn(#[source] io::Error),
}

/// A record that failed to decode: the tree, the key and the reason. Loading reports these
/// beside the records that decoded (see [`Loaded`](crate::Loaded)); the record is left in
/// place, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record in tree `{tree}` at key {key}: {source}")]
pub struct CorruptRecord {
    /// The tree: `sessions`, `queues`, `retained` or `expiry`.
    pub tree: &'static str,
    /// The key of the record.
    pub key: RecordKey,
    /// Why it does not decode.
    #[source]
    pub source: DecodeRecordError,
}

/// The raw key of a record, displayed with non-printable bytes escaped.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordKey(pub Vec<u8>);

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why stored bytes are not a record of this format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeRecordError {
    /// The record ends before a field: `needed` bytes, `remaining` left.
    #[error("truncated: {needed} bytes needed, {remaining} left")]
    Truncated {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes left in the record.
        remaining: usize,
    },
    /// The format version byte is not one this build reads (written by a newer version?).
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// A field holds a value outside its range (reserved flag bits, QoS 3, packet
    /// identifier 0, ...).
    #[error("invalid {field}: {value}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A string field is not an MQTT string.
    #[error("invalid {field}: {source}")]
    String {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: StringError,
    },
    /// The embedded MQTT 5 PUBLISH packet does not decode.
    #[error("embedded PUBLISH: {0}")]
    Publish(#[source] shoal_codec::DecodeError),
    /// Bytes left over after the record.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The key inside the record (client id, topic) is not the key it is stored under.
    #[error("the record names another key than the one it is stored under")]
    KeyMismatch,
    /// The key does not follow the layout of its tree.
    #[error("malformed key")]
    MalformedKey,
}

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeRecordError {
    /// The message cannot be written as an MQTT 5 PUBLISH.
    #[error("as an MQTT 5 PUBLISH: {0}")]
    Publish(#[source] shoal_codec::EncodeError),
    /// The message has an empty topic: a stored message names its topic, never an alias.
    #[error("empty topic")]
    EmptyTopic,
    /// A list longer than a four-byte count.
    #[error("{count} {field}, more than a four-byte count holds")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Its length.
        count: usize,
    },
}
