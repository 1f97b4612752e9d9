//! A list that is nearly always one item long, kept inline when it is:
//! one allocation (and free) less per statement for an analysis's
//! statements and a decision's tables.

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};

/// One item inline, or none or several in a `Vec`; reads as a slice.
#[derive(Clone, PartialEq, Eq)]
pub enum OneOrMany<T> {
    /// Exactly one item.
    One(T),
    /// None or several.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// Appends an item (the second one moves both into a `Vec`).
    pub fn push(&mut self, item: T) {
        *self = match std::mem::take(self) {
            OneOrMany::One(first) => OneOrMany::Many(vec![first, item]),
            OneOrMany::Many(v) if v.is_empty() => OneOrMany::One(item),
            OneOrMany::Many(mut v) => {
                v.push(item);
                OneOrMany::Many(v)
            }
        };
    }
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl<T> From<Vec<T>> for OneOrMany<T> {
    fn from(mut v: Vec<T>) -> Self {
        if v.len() == 1 {
            OneOrMany::One(v.pop().expect("one item"))
        } else {
            OneOrMany::Many(v)
        }
    }
}

impl<T> Deref for OneOrMany<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

impl<'a, T> IntoIterator for &'a OneOrMany<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for OneOrMany<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_slice_of_what_was_pushed_or_collected() {
        let mut l = OneOrMany::default();
        assert!(l.is_empty());
        l.push(1);
        assert!(matches!(l, OneOrMany::One(1)));
        l.push(2);
        l.push(3);
        assert_eq!(&*l, &[1, 2, 3]);
        assert!(matches!(OneOrMany::from(vec![7]), OneOrMany::One(7)));
        assert_eq!(&*OneOrMany::from(vec![1, 2]), &[1, 2]);
        assert_eq!(format!("{:?}", OneOrMany::from(vec![5])), "[5]");
    }
}
