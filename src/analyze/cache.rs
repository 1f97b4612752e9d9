//! A bounded, sharded cache of statement templates keyed by shape.
//!
//! Sixteen shards, each a std `Mutex<HashMap>`: the lock is held for one
//! lookup or insert (never across a parse or an `.await`), so sessions on
//! other shards never wait and contention stays low. When a shard is full
//! an arbitrary entry (HashMap order) is evicted: cheaper than LRU
//! bookkeeping and good enough for a working set that fits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::StatementTemplate;

const SHARDS: usize = 16;

/// A cache entry.
#[derive(Clone)]
pub(super) enum Entry {
    /// The template of this shape.
    Template(Arc<StatementTemplate>),
    /// This shape does not parse; look the raw text up instead.
    Raw,
}

pub(super) struct Cache {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    per_shard: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Entry>> {
        // FNV-1a over a prefix and the length: cheap, spreads shapes well.
        let mut h: u64 = 0xcbf29ce484222325;
        for &b in key.as_bytes().iter().take(64) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        h ^= key.len() as u64;
        &self.shards[(h as usize) % SHARDS]
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
