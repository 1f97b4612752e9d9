//! A bounded, sharded cache of statement templates keyed by shape.
//!
//! Sixteen shards, each a std `Mutex<HashMap>`: the lock is held for one
//! lookup or insert (never across a parse or an `.await`), so sessions on
//! other shards never wait and contention stays low. When a shard is full
//! an arbitrary entry (HashMap order) is evicted: cheaper than LRU
//! bookkeeping and good enough for a working set that fits.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::{Arc, Mutex};

use rustc_hash::FxBuildHasher;

use super::StatementTemplate;
use crate::prehashed::{Key, Lookup, Prehashed};

const SHARDS: usize = 16;

/// Keys are statement shapes; a client able to craft collisions only
/// slows its own lookups in one shard, which is bounded in size. A shape
/// is hashed once per lookup: the hash picks the shard and is kept with
/// the key, which the map then uses as it is.
type Map = HashMap<Key, Entry, BuildHasherDefault<Prehashed>>;

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

    /// The hash of a shape and its shard.
    fn shard(&self, key: &str) -> (u64, &Mutex<Map>) {
        // The whole key: shapes differ anywhere (a column in the middle).
        let h = FxBuildHasher.hash_one(key);
        (h, &self.shards[(h >> 32) as usize % SHARDS])
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        let (hash, shard) = self.shard(key);
        let map = shard.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(hash, key) as &dyn Lookup).cloned()
    }

    pub fn put(&self, key: String, entry: Entry) {
        let (hash, shard) = self.shard(&key);
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let key = Key {
            hash,
            text: key.into_boxed_str(),
        };
        if map.len() >= self.per_shard && !map.contains_key(&key as &dyn Lookup) {
            if let Some(victim) = map.keys().next().map(|k| (k.hash, k.text.clone())) {
                map.remove(&(victim.0, &*victim.1) as &dyn Lookup);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_borrowed_shape_find_what_was_put() {
        let c = Cache::new(64);
        for i in 0..20 {
            c.put(format!("select {i}"), Entry::Raw);
        }
        for i in 0..20 {
            assert!(c.get(&format!("select {i}")).is_some(), "{i}");
        }
        assert!(c.get("select 20").is_none());
        assert!(c.get("select 1 ").is_none());
        assert!(c.get("").is_none());
        // Putting a shape again replaces its entry.
        c.put("select 1".into(), Entry::Raw);
        assert_eq!(c.len(), 20);
    }

    #[test]
    fn full_shards_evict_to_stay_within_bound() {
        let c = Cache::new(SHARDS);
        for i in 0..1000 {
            c.put(format!("s{i}"), Entry::Raw);
            assert!(c.get(&format!("s{i}")).is_some(), "{i}");
        }
        assert!(c.len() <= SHARDS);
    }
}
