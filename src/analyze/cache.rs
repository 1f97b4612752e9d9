//! A bounded, sharded cache of statement templates keyed by shape.
//!
//! Sixteen shards, each a std `Mutex<HashMap>`: the lock is held for one
//! lookup or insert (never across a parse or an `.await`), so sessions on
//! other shards never wait and contention stays low. When a shard is full
//! an arbitrary entry (HashMap order) is evicted: cheaper than LRU
//! bookkeeping and good enough for a working set that fits.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::StatementTemplate;

const SHARDS: usize = 16;

/// A word-at-a-time multiplicative hash (the rustc "Fx" scheme): several
/// times faster than SipHash on 50–300 byte keys. Keys are statement
/// shapes; a client able to craft collisions only slows its own lookups
/// in one shard, which is bounded in size.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Map = HashMap<String, Entry, BuildHasherDefault<FxHasher>>;

/// A cache entry.
#[derive(Clone)]
pub(super) enum Entry {
    /// The template of this shape.
    Template(Arc<StatementTemplate>),
    /// This shape does not parse; look the raw text up instead.
    Raw,
}

pub(super) struct Cache {
    shards: Vec<Mutex<Map>>,
    per_shard: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Map> {
        // The whole key: shapes differ anywhere (a column in the middle).
        let mut h = FxHasher::default();
        h.write(key.as_bytes());
        &self.shards[(h.finish() >> 32) as usize % SHARDS]
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        let map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    pub fn put(&self, key: String, entry: Entry) {
        let mut map = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(key, entry);
    }
}

#[cfg(test)]
impl Cache {
    /// Entries across all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
