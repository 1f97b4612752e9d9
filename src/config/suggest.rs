//! "did you mean `…`?" for misspelt names: config keys and gateway URL
//! parameters. A plain edit distance over a handful of names; no crate
//! needed.

use serde::Deserialize;
use serde::de::{self, Visitor};

/// The known name closest to `word`, if it is close enough to be a typo:
/// at most 2 edits, or a third of the word's length for long words (so
/// `partition_col` still finds `partition_column`), and never the word itself.
pub(super) fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|&(d, _)| d > 0 && d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions, substitutions), on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The field names serde's derive gives `T` (the list it hands to
/// `deserialize_struct`), so the suggestions are always the schema's own
/// keys and cannot drift from it.
pub(super) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always fails: it only records what the derive asked for.
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_nearest_name_and_strangers_find_none() {
        let known = ["gateway", "fallback"];
        assert_eq!(did_you_mean("gatway", &known), Some("gateway"));
        assert_eq!(did_you_mean("fallbacks", &known), Some("fallback"));
        assert_eq!(did_you_mean("colour", &known), None);
        assert_eq!(did_you_mean("gateway", &known), None);
        assert_eq!(
            did_you_mean("partition_col", &["partition_column", "tenant_column"]),
            Some("partition_column")
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("mode", "mode"), 0);
        assert_eq!(edit_distance("mdoe", "mode"), 2);
    }

    #[test]
    fn field_probe_reads_a_derived_struct_s_fields() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct S {
            alpha: u8,
            beta: Option<String>,
        }
        assert_eq!(fields_of::<S>(), ["alpha", "beta"]);
    }
}
