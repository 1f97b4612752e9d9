//! The statement fingerprint store behind `/statements`: which normalised
//! statements produced which decision on which table, how often, and when
//! last — bounded in memory.
//!
//! Keyed by (fingerprint, decision, table). When the store is full, the
//! least-counted entries (oldest first among equals) are evicted in one batch
//! down to 90 % of the capacity, so a burst of new fingerprints costs one
//! scan per tenth of the capacity, not one per statement.

use std::borrow::Cow;
use std::hash::{BuildHasher, BuildHasherDefault, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;

use super::labels::{DecisionLabel, ScatterCause};
use crate::prehashed::{Key, Lookup, Prehashed};
use crate::refusal::RejectReason;

/// Longest fingerprint kept, in bytes; longer ones are cut at a char boundary
/// and end with `…`.
pub const MAX_FINGERPRINT_LEN: usize = 2048;

/// Default number of (fingerprint, decision, table) entries kept.
pub const DEFAULT_CAPACITY: usize = 2000;

/// Why a statement got its decision, when that is more than the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Nothing more to say (global, route, rewrite).
    None,
    /// Rejected for this reason.
    Reject(RejectReason),
    /// Scattered for this cause.
    Scatter(ScatterCause),
}

impl Detail {
    fn as_str(self) -> Option<&'static str> {
        match self {
            Detail::None => None,
            Detail::Reject(r) => Some(r.as_str()),
            Detail::Scatter(c) => Some(c.as_str()),
        }
    }
}

#[derive(Debug)]
struct Slot {
    decision: DecisionLabel,
    /// Label value (configured table name, `other` or `none`).
    table: Box<str>,
    detail: Detail,
    count: u64,
    last_seen: u64,
}

/// One row of `/statements`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatementRow {
    /// Normalised statement, literal-free.
    pub fingerprint: String,
    /// `global`, `route`, `rewrite`, `scatter` or `reject`.
    pub decision: &'static str,
    /// Table label (configured name, `other` or `none`).
    pub table: String,
    /// Rejection reason or scatter cause, when there is one (the latest seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Times seen since start (or since the entry was last evicted).
    pub count: u64,
    /// Last seen, unix seconds.
    pub last_seen_unix: u64,
    /// Last seen, RFC 3339 UTC.
    pub last_seen: String,
}

/// The `/statements` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatementsReport {
    /// Most entries kept.
    pub capacity: usize,
    /// Entries kept now.
    pub entries: usize,
    /// Entries evicted since start (their counts are lost, the metrics keep them).
    pub evicted: u64,
    /// Rows, highest count first, after filtering.
    pub statements: Vec<StatementRow>,
}

/// What to return from [`StatementStore::report`].
#[derive(Debug, Clone, Default)]
pub struct StatementFilter {
    /// Only this decision.
    pub decision: Option<DecisionLabel>,
    /// Only this table label.
    pub table: Option<String>,
    /// At most this many rows.
    pub limit: Option<usize>,
}

/// An eviction candidate: (count, last_seen, fingerprint, decision, table).
type Victim = (u64, u64, Key, DecisionLabel, Box<str>);

// Fingerprints come from client SQL, so a key's hash stays SipHash with a
// per-process key (no HashDoS); keeping it with the key lets a lookup
// whose hash is known skip hashing the text.

/// Number of remembered (fingerprint address → hash) hints.
const HINTS: usize = 64;

/// The hash last computed for a fingerprint at this address and length.
/// An analysed statement's fingerprint lives in its shape's cached
/// template, so the same shape comes back with the same address: the hint
/// saves hashing it again. Only a hint: a stale or torn one gives a wrong
/// hash, the lookup misses, and the text is hashed.
#[derive(Debug, Default)]
struct Hint {
    addr: AtomicUsize,
    len: AtomicUsize,
    hash: AtomicU64,
}

/// Bounded, concurrent map of statement fingerprints to counts.
#[derive(Debug)]
pub struct StatementStore {
    /// Fingerprint → one slot per (decision, table) seen with it (few).
    map: DashMap<Key, Vec<Slot>, BuildHasherDefault<Prehashed>>,
    /// SipHash, randomly keyed: the hash of every [`Key`].
    hasher: RandomState,
    hints: [Hint; HINTS],
    capacity: usize,
    slots: AtomicUsize,
    evicted: AtomicU64,
}

impl StatementStore {
    /// A store that keeps at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> StatementStore {
        StatementStore {
            map: DashMap::default(),
            hasher: RandomState::new(),
            hints: std::array::from_fn(|_| Hint::default()),
            capacity: capacity.max(1),
            slots: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Most entries kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.slots.load(Ordering::Relaxed)
    }

    /// Whether nothing was recorded (or everything evicted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one statement. `table` must already be a label value (see
    /// `Metrics::record_statement`, which passes it through the configured names).
    pub fn record(&self, fingerprint: &str, decision: DecisionLabel, table: &str, detail: Detail) {
        self.record_at(fingerprint, decision, table, detail, unix_now());
    }

    fn record_at(
        &self,
        fingerprint: &str,
        decision: DecisionLabel,
        table: &str,
        detail: Detail,
        now: u64,
    ) {
        let mut inserted = false;
        {
            // The shard lock is held only for this block: never across an
            // `.await`, and released before a possible eviction scan. A known
            // fingerprint is found without allocating; only a new one is copied.
            // Every key is a sanitised fingerprint, so a text equal to a key
            // is clean already: it is sanitised (a scan of the whole text)
            // only when it is not found as it is.
            let hint = &self.hints[hint_index(fingerprint)];
            let hinted = (hint.addr.load(Ordering::Relaxed) == fingerprint.as_ptr() as usize
                && hint.len.load(Ordering::Relaxed) == fingerprint.len())
            .then(|| hint.hash.load(Ordering::Relaxed));
            let found = hinted.and_then(|h| self.map.get_mut(&(h, fingerprint) as &dyn Lookup));
            let mut slots = match found {
                Some(slots) => slots,
                None => {
                    let h = self.hasher.hash_one(fingerprint);
                    match self.map.get_mut(&(h, fingerprint) as &dyn Lookup) {
                        Some(slots) => {
                            hint.addr
                                .store(fingerprint.as_ptr() as usize, Ordering::Relaxed);
                            hint.len.store(fingerprint.len(), Ordering::Relaxed);
                            hint.hash.store(h, Ordering::Relaxed);
                            slots
                        }
                        None => {
                            let clean = sanitize_fingerprint(fingerprint);
                            let h = self.hasher.hash_one(clean.as_ref());
                            match self.map.get_mut(&(h, clean.as_ref()) as &dyn Lookup) {
                                Some(slots) => slots,
                                None => self
                                    .map
                                    .entry(Key {
                                        hash: h,
                                        text: Box::from(clean.as_ref()),
                                    })
                                    .or_default(),
                            }
                        }
                    }
                }
            };
            match slots
                .iter_mut()
                .find(|s| s.decision == decision && &*s.table == table)
            {
                Some(slot) => {
                    slot.count += 1;
                    slot.last_seen = now;
                    if detail != Detail::None {
                        slot.detail = detail;
                    }
                }
                None => {
                    slots.push(Slot {
                        decision,
                        table: Box::from(table),
                        detail,
                        count: 1,
                        last_seen: now,
                    });
                    inserted = true;
                }
            }
        }
        if inserted && self.slots.fetch_add(1, Ordering::Relaxed) + 1 > self.capacity {
            self.evict();
        }
    }

    /// Drops the least-counted entries down to 90 % of capacity.
    fn evict(&self) {
        let target = self.capacity - self.capacity / 10;
        // (count, last_seen, fingerprint, decision, table) of every entry.
        let mut all: Vec<Victim> = Vec::new();
        for entry in self.map.iter() {
            for s in entry.value() {
                all.push((
                    s.count,
                    s.last_seen,
                    entry.key().clone(),
                    s.decision,
                    s.table.clone(),
                ));
            }
        }
        if all.len() <= target {
            return;
        }
        let excess = all.len() - target;
        all.sort_unstable_by_key(|v| (v.0, v.1));
        for (_, _, fp, decision, table) in all.into_iter().take(excess) {
            let mut emptied = false;
            if let Some(mut slots) = self.map.get_mut(&fp as &dyn Lookup) {
                let before = slots.len();
                slots.retain(|s| !(s.decision == decision && s.table == table));
                let removed = before - slots.len();
                if removed > 0 {
                    self.slots.fetch_sub(removed, Ordering::Relaxed);
                    self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
                }
                emptied = slots.is_empty();
            }
            if emptied {
                self.map
                    .remove_if(&fp as &dyn Lookup, |_, slots| slots.is_empty());
            }
        }
    }

    /// Rows matching `filter`, highest count first (then most recent).
    pub fn report(&self, filter: &StatementFilter) -> StatementsReport {
        let mut rows = Vec::new();
        for entry in self.map.iter() {
            for s in entry.value() {
                if filter.decision.is_some_and(|d| d != s.decision) {
                    continue;
                }
                if filter.table.as_deref().is_some_and(|t| t != &*s.table) {
                    continue;
                }
                rows.push(StatementRow {
                    fingerprint: entry.key().text.to_string(),
                    decision: s.decision.as_str(),
                    table: s.table.to_string(),
                    reason: s.detail.as_str(),
                    count: s.count,
                    last_seen_unix: s.last_seen,
                    last_seen: rfc3339(s.last_seen),
                });
            }
        }
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(b.last_seen_unix.cmp(&a.last_seen_unix))
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        if let Some(limit) = filter.limit {
            rows.truncate(limit);
        }
        StatementsReport {
            capacity: self.capacity,
            entries: self.len(),
            evicted: self.evicted.load(Ordering::Relaxed),
            statements: rows,
        }
    }
}

/// The hint slot of a fingerprint, by its address.
fn hint_index(fingerprint: &str) -> usize {
    let addr = fingerprint.as_ptr() as usize as u64;
    // Fibonacci hashing of the address: the top bits pick the slot.
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - HINTS.trailing_zeros())) as usize
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Formats unix seconds as RFC 3339 UTC (`2026-11-26T06:20:20Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Defence in depth for fingerprints: the analyzer already replaces literals,
/// but if one slips through (a fingerprint built from raw text on a parse
/// error, say), quoted strings and numbers become `?` here, and the length is
/// capped. Identifiers (`t1`, `"Col 2"`) and parameters (`$1`) are kept.
pub fn sanitize_fingerprint(fp: &str) -> Cow<'_, str> {
    let needs_work = fp.len() > MAX_FINGERPRINT_LEN || has_literal(fp);
    if !needs_work {
        return Cow::Borrowed(fp);
    }
    let mut out = String::with_capacity(fp.len().min(MAX_FINGERPRINT_LEN + 4));
    let bytes = fp.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if out.len() > MAX_FINGERPRINT_LEN {
            break;
        }
        let c = bytes[i];
        match c {
            b'\'' => {
                i = skip_quoted(bytes, i + 1, b'\'');
                out.push('?');
            }
            b'"' => {
                let end = skip_quoted(bytes, i + 1, b'"');
                out.push_str(&fp[i..end]);
                i = end;
            }
            b'$' if dollar_tag_len(bytes, i).is_some() => {
                let tag_len = dollar_tag_len(bytes, i).unwrap_or(1);
                let tag = &bytes[i..i + tag_len];
                let mut j = i + tag_len;
                while j < bytes.len() && !bytes[j..].starts_with(tag) {
                    j += 1;
                }
                i = (j + tag_len).min(bytes.len());
                out.push('?');
            }
            b'0'..=b'9' if !prev_is_word(bytes, i) => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                out.push('?');
            }
            _ => {
                // Copy one whole UTF-8 character.
                let len = utf8_len(c);
                let end = (i + len).min(bytes.len());
                out.push_str(fp.get(i..end).unwrap_or("?"));
                i = end;
            }
        }
    }
    if out.len() > MAX_FINGERPRINT_LEN || i < bytes.len() {
        // A single copied piece (a long quoted identifier) may overshoot: cut.
        let mut end = out.len().min(MAX_FINGERPRINT_LEN);
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    Cow::Owned(out)
}

fn has_literal(fp: &str) -> bool {
    let bytes = fp.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => return true,
            b'"' => {
                i = skip_quoted(bytes, i + 1, b'"');
                continue;
            }
            b'$' if dollar_tag_len(bytes, i).is_some() => return true,
            b'0'..=b'9' if !prev_is_word(bytes, i) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// After an identifier character or `$` (a parameter `$1`), a digit is not a literal.
fn prev_is_word(bytes: &[u8], i: usize) -> bool {
    i > 0 && {
        let p = bytes[i - 1];
        p.is_ascii_alphanumeric() || p == b'_' || p == b'$' || p >= 0x80
    }
}

/// Length of a dollar-quote opening tag (`$$`, `$tag$`) at `i`, if one starts there.
fn dollar_tag_len(bytes: &[u8], i: usize) -> Option<usize> {
    if prev_is_word(bytes, i) {
        return None;
    }
    let mut j = i + 1;
    while j < bytes.len() && (bytes[j].is_ascii_alphabetic() || bytes[j] == b'_') {
        j += 1;
    }
    (j < bytes.len() && bytes[j] == b'$').then_some(j + 1 - i)
}

/// Index just past the closing quote (doubled quotes are escapes).
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_free_fingerprints_are_kept_as_is() {
        let fp = "SELECT * FROM users WHERE t1.region = $1 AND \"Col 2\" IN ($2, $3)";
        assert!(matches!(sanitize_fingerprint(fp), Cow::Borrowed(_)));
    }

    #[test]
    fn stray_literals_are_replaced() {
        let fp = "SELECT * FROM users WHERE email = 'a''b@x.org' AND n = 42 AND x = $q$secret$q$ AND y = 1.5e3";
        let clean = sanitize_fingerprint(fp);
        assert!(!clean.contains("a''b"), "{clean}");
        assert!(!clean.contains("42") && !clean.contains("secret") && !clean.contains("1.5"));
        assert!(clean.contains("users") && clean.contains("email = ?"));
    }

    #[test]
    fn long_fingerprints_are_capped_at_a_char_boundary() {
        let fp = "SELECT é".repeat(1000);
        let clean = sanitize_fingerprint(&fp);
        assert!(clean.len() <= MAX_FINGERPRINT_LEN + '…'.len_utf8());
        assert!(clean.ends_with('…'));
    }

    #[test]
    fn sanitizer_survives_malformed_input_and_always_caps() {
        let long_ident = format!("SELECT \"{}\" FROM t", "x".repeat(10_000));
        let cases = [
            "'unterminated",
            "\"unterminated",
            "$",
            "$$",
            "$tag$ never closed",
            "9",
            "é'ü",
            "x = $1$2 '' \"\"",
            long_ident.as_str(),
        ];
        for case in cases {
            let clean = sanitize_fingerprint(case);
            assert!(
                clean.len() <= MAX_FINGERPRINT_LEN + '…'.len_utf8(),
                "{case}"
            );
        }
        assert!(sanitize_fingerprint(&long_ident).ends_with('…'));
    }

    #[test]
    fn store_never_exceeds_capacity_and_keeps_the_most_counted() {
        let store = StatementStore::new(10);
        for _ in 0..5 {
            store.record_at("SELECT hot", DecisionLabel::Route, "users", Detail::None, 1);
        }
        for i in 0..100 {
            store.record_at(
                &format!("SELECT c{i}"),
                DecisionLabel::Global,
                "none",
                Detail::None,
                2,
            );
            assert!(store.len() <= 10);
        }
        let report = store.report(&StatementFilter::default());
        assert!(report.statements.len() <= 10);
        assert_eq!(report.statements[0].fingerprint, "SELECT hot");
        assert_eq!(report.statements[0].count, 5);
        assert!(report.evicted > 0);
    }

    #[test]
    fn report_filters_by_decision_and_keeps_the_reason() {
        let store = StatementStore::new(10);
        let reason = Detail::Reject(RejectReason::NoRegion);
        store.record_at("SELECT a", DecisionLabel::Reject, "users", reason, 1);
        store.record_at("SELECT a", DecisionLabel::Reject, "users", reason, 3);
        store.record_at("SELECT a", DecisionLabel::Route, "users", Detail::None, 2);
        let filter = StatementFilter {
            decision: Some(DecisionLabel::Reject),
            ..Default::default()
        };
        let rows = store.report(&filter).statements;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 2);
        assert_eq!(rows[0].reason, Some("no_region"));
        assert_eq!(rows[0].last_seen_unix, 3);
    }

    #[test]
    fn a_stray_literal_is_stored_sanitised_and_counted_with_its_clean_twin() {
        let store = StatementStore::new(10);
        for (i, fp) in ["SELECT 'secret'", "SELECT ?", "SELECT 'other'"]
            .into_iter()
            .enumerate()
        {
            store.record_at(fp, DecisionLabel::Global, "none", Detail::None, i as u64);
        }
        let rows = store.report(&StatementFilter::default()).statements;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fingerprint, "SELECT ?");
        assert_eq!(rows[0].count, 3);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
