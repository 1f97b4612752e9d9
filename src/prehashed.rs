//! Map keys that carry their own hash: a text hashed once, by whichever
//! hasher its map needs (FxHash for the shape cache, keyed SipHash for the
//! `/statements` store), then looked up by that hash without hashing the
//! text again, and without copying it (a borrowed `(hash, &str)` finds a
//! stored [`Key`]).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A stored key: the text and its hash.
#[derive(Debug, Clone)]
pub struct Key {
    /// The hash the map files it under.
    pub hash: u64,
    /// The text.
    pub text: Box<str>,
}

/// A key as looked up: a stored [`Key`], or a borrowed `(hash, &str)`.
pub trait Lookup {
    /// The precomputed hash.
    fn key_hash(&self) -> u64;
    /// The text.
    fn key_text(&self) -> &str;
}

impl Lookup for Key {
    fn key_hash(&self) -> u64 {
        self.hash
    }
    fn key_text(&self) -> &str {
        &self.text
    }
}

impl Lookup for (u64, &str) {
    fn key_hash(&self) -> u64 {
        self.0
    }
    fn key_text(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn Lookup + 'a> for Key {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

// A key hashes as its stored hash and equals a key with the same hash and
// text: a lookup with a wrong hash (a stale hint) can only miss.
impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.key_hash());
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_hash() == other.key_hash() && self.key_text() == other.key_text()
    }
}

impl Eq for dyn Lookup + '_ {}

// As its borrowed form hashes and compares (the map requires it).
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn Lookup) == (other as &dyn Lookup)
    }
}

impl Eq for Key {}

/// The maps' hasher: a key hashes as its stored hash (use as
/// `BuildHasherDefault<Prehashed>`).
#[derive(Debug, Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached (keys write one u64); kept total all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
