//! `MqttString`: a UTF-8 encoded string as MQTT defines it, held as a zero-copy slice.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// The longest string that a two-byte length prefix can carry.
pub const MAX_STRING_LEN: usize = u16::MAX as usize;

/// Why bytes are not an MQTT UTF-8 encoded string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StringError {
    /// Ill-formed UTF-8, surrogates included [MQTT-1.5.4-1].
    #[error("ill-formed UTF-8 [MQTT-1.5.4-1]")]
    InvalidUtf8,
    /// The null character U+0000 [MQTT-1.5.4-2].
    #[error("the string contains U+0000 [MQTT-1.5.4-2]")]
    NullCharacter,
    /// Longer than a two-byte length prefix allows (§1.5.4).
    #[error("the string is {0} bytes long, more than 65535 (§1.5.4)")]
    TooLong(usize),
}

/// A UTF-8 encoded string as MQTT defines it (§1.5.4): well-formed UTF-8, no U+0000, at most
/// 65,535 bytes. Decoded strings share the read buffer (cloning is a reference count).
///
/// It hashes, compares and orders exactly as its `str` does, so maps keyed by `MqttString`
/// can be searched with a `&str` (`Borrow<str>`).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MqttString(Bytes);

impl std::hash::Hash for MqttString {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` requires it.
        self.as_str().hash(state);
    }
}

impl MqttString {
    /// The empty string.
    pub const fn empty() -> Self {
        Self(Bytes::new())
    }

    /// A string from a literal.
    ///
    /// # Panics
    /// If the literal breaks the MQTT string rules: a bug in the calling code, not input.
    pub fn from_static(s: &'static str) -> Self {
        match check(s.as_bytes()) {
            Ok(()) => Self(Bytes::from_static(s.as_bytes())),
            Err(e) => panic!("invalid MQTT string literal {s:?}: {e}"),
        }
    }

    /// Checks `bytes` and wraps them without copying.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, StringError> {
        check(&bytes)?;
        Ok(Self(bytes))
    }

    /// A copy in its own allocation. A decoded string shares its packet's read buffer and
    /// keeps all of it alive: strings kept long (client ids, filters, retained topics) are
    /// detached first.
    pub fn detached(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks that the bytes are UTF-8 (`check`), and the bytes
        // are never mutated afterwards (`Bytes` is immutable).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The bytes of the string, shared.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The MQTT string rules of §1.5.4.
fn check(bytes: &[u8]) -> Result<(), StringError> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(StringError::TooLong(bytes.len()));
    }
    // `from_utf8` rejects surrogates and overlong forms, as [MQTT-1.5.4-1] requires.
    std::str::from_utf8(bytes).map_err(|_| StringError::InvalidUtf8)?;
    if bytes.contains(&0) {
        return Err(StringError::NullCharacter);
    }
    Ok(())
}

impl Deref for MqttString {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for MqttString {
    type Error = StringError;

    fn try_from(s: &str) -> Result<Self, StringError> {
        Self::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for MqttString {
    type Error = StringError;

    fn try_from(s: String) -> Result<Self, StringError> {
        Self::from_bytes(Bytes::from(s))
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_null_surrogates_and_overlong_strings() {
        assert_eq!(
            MqttString::try_from("a\0b"),
            Err(StringError::NullCharacter)
        );
        // U+D800 encoded as UTF-8 (a surrogate) is ill-formed.
        let surrogate = Bytes::from_static(&[0xED, 0xA0, 0x80]);
        assert_eq!(
            MqttString::from_bytes(surrogate),
            Err(StringError::InvalidUtf8)
        );
        let long = "x".repeat(MAX_STRING_LEN + 1);
        assert_eq!(MqttString::try_from(long), Err(StringError::TooLong(65536)));
        assert_eq!(
            MqttString::try_from("x".repeat(MAX_STRING_LEN)).map(|s| s.len()),
            Ok(65535)
        );
    }

    #[test]
    fn hashes_as_its_str_so_maps_can_be_searched_by_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(MqttString::from_static("client-1"), 1);
        assert_eq!(map.get("client-1"), Some(&1));
    }

    #[test]
    fn keeps_a_byte_order_mark() {
        // [MQTT-1.5.4-3]: U+FEFF is not skipped or stripped.
        let s = MqttString::try_from("\u{FEFF}a").expect("a BOM is a valid character");
        assert_eq!(s.as_bytes().as_ref(), &[0xEF, 0xBB, 0xBF, b'a']);
    }
}
