//! Bind parameter values, as the Bind message carries them.

use std::borrow::Cow;

/// The values of a Bind message: `None` is SQL NULL; `formats` follows the
/// protocol (no entry: all text; one entry: applies to all; else one per
/// value; 0 = text, 1 = binary). A simple query has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'a> {
    /// Parameter values, `$1` first.
    pub values: &'a [Option<&'a [u8]>],
    /// Format codes.
    pub formats: &'a [i16],
    /// Parameter type OIDs from Parse (0 or missing: unspecified).
    pub types: &'a [u32],
}

/// A parameter as the analyzer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamText<'a> {
    /// The value as text: borrowed from the statement or the Bind when it
    /// is written there as is (the usual case, no copy per statement).
    Text(Cow<'a, str>),
    /// SQL NULL.
    Null,
    /// No value bound (statement analysed without a Bind, e.g. by `check`).
    Unbound,
}

/// Values held in memory (an `EXECUTE`'s arguments) as [`Params::values`]
/// borrows them.
pub fn borrowed(values: &[Option<bytes::Bytes>]) -> Vec<Option<&[u8]>> {
    values.iter().map(|v| v.as_deref()).collect()
}

impl<'a> Params<'a> {
    /// No parameters (simple query, or offline analysis).
    pub const NONE: Params<'static> = Params {
        values: &[],
        formats: &[],
        types: &[],
    };

    /// Whether these come from a Bind (so `$n` must resolve).
    pub fn is_bound(&self) -> bool {
        !self.values.is_empty()
    }

    /// `$n` (1-based) as text where the value is a label (a region name):
    /// binary values are read as UTF-8, as text, varchar and enum labels
    /// travel as their bytes in binary format too.
    pub fn label(&self, n: u32) -> ParamText<'a> {
        let Some(i) = (n as usize).checked_sub(1) else {
            return ParamText::Unbound;
        };
        match self.values.get(i) {
            None => ParamText::Unbound,
            Some(None) => ParamText::Null,
            Some(Some(b)) => ParamText::Text(String::from_utf8_lossy(b)),
        }
    }

    /// `$n` (1-based) as text. Binary values: 2, 4 or 8 bytes are read as
    /// big-endian integers (int2/int4/int8 tenant ids), 16 bytes as a
    /// UUID; anything else as UTF-8 (text, varchar and enum labels are
    /// sent as their bytes in binary format too).
    pub fn text(&self, n: u32) -> ParamText<'a> {
        let Some(i) = (n as usize).checked_sub(1) else {
            return ParamText::Unbound;
        };
        let Some(v) = self.values.get(i) else {
            return ParamText::Unbound;
        };
        let Some(b) = *v else {
            return ParamText::Null;
        };
        let format = match self.formats.len() {
            0 => 0,
            1 => self.formats[0],
            _ => self.formats.get(i).copied().unwrap_or(0),
        };
        if format != 1 {
            return ParamText::Text(String::from_utf8_lossy(b));
        }
        let text = match (self.types.get(i).copied().unwrap_or(0), b.len()) {
            (oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME, _) => String::from_utf8_lossy(b),
            (oid::INT2 | 0, 2) if oid_or_binary(self.types.get(i), b) => {
                Cow::Owned(i16::from_be_bytes([b[0], b[1]]).to_string())
            }
            (oid::INT4 | 0, 4) if oid_or_binary(self.types.get(i), b) => {
                Cow::Owned(i32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string())
            }
            (oid::INT8 | 0, 8) if oid_or_binary(self.types.get(i), b) => Cow::Owned(
                i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]).to_string(),
            ),
            (oid::UUID | 0, 16) if oid_or_binary(self.types.get(i), b) => {
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                Cow::Owned(format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            _ => String::from_utf8_lossy(b),
        };
        ParamText::Text(text)
    }
}

/// Type OIDs of the parameter types tenant ids and regions come in.
mod oid {
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const NAME: u32 = 19;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const UUID: u32 = 2950;
}

/// A binary value whose type the client left unspecified is read as an
/// integer or UUID by its length only when it is not printable text
/// (text, varchar and enum labels travel as their bytes in binary format
/// too); a declared numeric or uuid type is always read as such.
fn oid_or_binary(declared: Option<&u32>, b: &[u8]) -> bool {
    declared.is_some_and(|t| *t != 0) || !b.iter().all(|c| (0x20..0x7f).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_text_binary_ints_uuid_and_null() {
        let (int, uuid) = (42i32.to_be_bytes(), [0x12u8; 16]);
        let vals = vec![Some(&b"eu"[..]), Some(&int[..]), None, Some(&uuid[..])];
        let p = Params {
            values: &vals,
            formats: &[0, 1, 0, 1],
            types: &[],
        };
        assert_eq!(p.text(1), ParamText::Text("eu".into()));
        assert_eq!(p.text(2), ParamText::Text("42".into()));
        assert_eq!(p.text(3), ParamText::Null);
        assert_eq!(
            p.text(4),
            ParamText::Text("12121212-1212-1212-1212-121212121212".into())
        );
        assert_eq!(p.text(5), ParamText::Unbound);
        assert_eq!(Params::NONE.text(1), ParamText::Unbound);
    }

    #[test]
    fn binary_text_of_integer_length_stays_text_unless_typed() {
        let vals = vec![Some(&b"eu"[..]), Some(&b"apac"[..])];
        let untyped = Params {
            values: &vals,
            formats: &[1],
            types: &[],
        };
        assert_eq!(untyped.text(1), ParamText::Text("eu".into()));
        assert_eq!(untyped.text(2), ParamText::Text("apac".into()));
        assert_eq!(untyped.label(2), ParamText::Text("apac".into()));
        let typed = Params {
            values: &vals,
            formats: &[1],
            types: &[oid::INT2, oid::INT4],
        };
        // A region is a label whatever the declared type.
        assert_eq!(typed.label(1), ParamText::Text("eu".into()));
        assert_eq!(
            typed.text(1),
            ParamText::Text(i16::from_be_bytes(*b"eu").to_string().into())
        );
        assert_eq!(
            typed.text(2),
            ParamText::Text(i32::from_be_bytes(*b"apac").to_string().into())
        );
    }
}
