//! How values are stored in a group's trees, and how failures become openraft's
//! `StorageError`.
//!
//! Values are JSON (openraft's types come with serde); a value that does not decode is a
//! storage error naming the tree and key, never a panic.

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::type_config::RaftNodeId;

pub(crate) type Result<T> = std::result::Result<T, StorageError<RaftNodeId>>;

/// Encodes `value`; `subject` says what was being written, for the error.
pub(crate) fn encode<T: Serialize>(
    value: &T,
    subject: ErrorSubject<RaftNodeId>,
) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| io_error(subject, ErrorVerb::Write, &e))
}

/// Decodes the value stored under `key` in `tree`.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    tree: &sled::Tree,
    key: &[u8],
    subject: ErrorSubject<RaftNodeId>,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = format!(
            "value under key {} of tree {} does not decode: {e}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&tree.name()),
        );
        StorageIOError::new(subject, ErrorVerb::Read, AnyError::error(message)).into()
    })
}

/// A failure of sled (or of a flush) while `verb`-ing `subject`.
pub(crate) fn io_error(
    subject: ErrorSubject<RaftNodeId>,
    verb: ErrorVerb,
    error: &(impl std::error::Error + 'static),
) -> StorageError<RaftNodeId> {
    StorageIOError::new(subject, verb, AnyError::new(error)).into()
}
