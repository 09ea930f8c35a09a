//! `Level`: one literal level of a topic filter, the key of a trie node's children; and
//! `split_level`, the one way levels are cut off a topic.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Levels up to this many bytes live inside the key, with no allocation of their own.
const INLINE_LEN: usize = 22;

/// One literal level of a topic filter, as bytes. Most levels are short and stored inline (24
/// bytes in all, no pointer to chase on lookup); longer ones go to the heap. Equality and
/// hashing are those of the bytes, so a map keyed by `Level` is searched with the `&[u8]` of a
/// topic level, without allocating.
pub(crate) enum Level {
    /// A level of at most [`INLINE_LEN`] bytes: the first `len` of `bytes`.
    Inline { len: u8, bytes: [u8; INLINE_LEN] },
    /// A longer level.
    Heap(Box<[u8]>),
}

impl Level {
    /// The key of one level of a topic filter.
    pub(crate) fn new(level: &str) -> Self {
        let src = level.as_bytes();
        match u8::try_from(src.len()) {
            Ok(len) if src.len() <= INLINE_LEN => {
                let mut bytes = [0; INLINE_LEN];
                bytes[..src.len()].copy_from_slice(src);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(src.into()),
        }
    }

    /// The level's bytes.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for Level {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Level {}

impl Hash for Level {
    /// Hashes exactly as the `[u8]` it borrows as, as `Borrow` requires.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

impl Borrow<[u8]> for Level {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Cuts the first level off `levels`: the level, and the levels after its `/` if there is one
/// (`"a/"` gives `("a", Some(""))`, `"a"` gives `("a", None)`). Levels are short: a plain scan
/// beats a call to `memchr`.
#[inline]
pub(crate) fn split_level(levels: &str) -> (&str, Option<&str>) {
    match levels.bytes().position(|b| b == b'/') {
        // `/` is ASCII: both cuts are on character boundaries.
        Some(i) => (&levels[..i], Some(&levels[i + 1..])),
        None => (levels, None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn short_levels_are_inline_and_long_ones_on_the_heap() {
        let short = "a".repeat(INLINE_LEN);
        let long = "a".repeat(INLINE_LEN + 1);
        assert!(matches!(Level::new(&short), Level::Inline { .. }));
        assert!(matches!(Level::new(&long), Level::Heap(_)));
        for level in ["", "telemetry", &short, &long, "d\u{e9}j\u{e0}"] {
            assert_eq!(Level::new(level).as_bytes(), level.as_bytes());
        }
        assert_eq!(size_of::<Level>(), 24);
    }

    #[test]
    fn a_map_of_levels_is_searched_by_bytes() {
        let long = "b".repeat(40);
        let map: HashMap<Level, u8> = [
            (Level::new("a"), 1),
            (Level::new(&long), 2),
            (Level::new(""), 3),
        ]
        .into();
        assert_eq!(map.get(b"a".as_slice()), Some(&1));
        assert_eq!(map.get(long.as_bytes()), Some(&2));
        assert_eq!(map.get(b"".as_slice()), Some(&3));
        assert_eq!(map.get(b"ab".as_slice()), None);
    }

    #[test]
    fn split_level_keeps_empty_levels() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level("a/"), ("a", Some("")));
        assert_eq!(split_level("/a"), ("", Some("a")));
        assert_eq!(split_level(""), ("", None));
    }
}
