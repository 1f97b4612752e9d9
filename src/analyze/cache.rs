//! A bounded, sharded cache of statement templates keyed by shape.
//!
//! Sixteen shards, each a std `Mutex<HashMap>`: the lock is held for one
//! lookup or insert (never across a parse or an `.await`), so sessions on
//! other shards never wait and contention stays low. When a shard is full
//! an arbitrary entry (HashMap order) is evicted: cheaper than LRU
//! bookkeeping and good enough for a working set that fits.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use rustc_hash::FxBuildHasher;

use super::StatementTemplate;

const SHARDS: usize = 16;

/// Keys are statement shapes; a client able to craft collisions only
/// slows its own lookups in one shard, which is bounded in size.
type Map = HashMap<String, Entry, FxBuildHasher>;

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
        let h = FxBuildHasher.hash_one(key);
        &self.shards[(h >> 32) as usize % SHARDS]
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
