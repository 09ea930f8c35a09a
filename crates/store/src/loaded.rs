//! `Loaded`: what a load read back, the records that do not decode kept apart.

use crate::error::{CorruptRecord, StoreError};

/// What a load read back: every record that decoded, in key order, and, apart, every one
/// that did not. Nothing is skipped silently: the caller decides whether a corrupt record
/// stops the node ([`strict`](Self::strict)) or is logged and left aside. Corrupt records
/// stay in the store untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "corrupt records are reported here, not logged"]
pub struct Loaded<T> {
    /// The records that decoded.
    pub records: Vec<T>,
    /// The records that did not.
    pub corrupt: Vec<CorruptRecord>,
}

impl<T> Loaded<T> {
    /// The records, or the first corrupt one as an error.
    pub fn strict(self) -> Result<Vec<T>, StoreError> {
        match self.corrupt.into_iter().next() {
            None => Ok(self.records),
            Some(corrupt) => Err(corrupt.into()),
        }
    }
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            corrupt: Vec::new(),
        }
    }
}
