//! Bind parameter values, as the Bind message carries them.

use bytes::Bytes;

/// The values of a Bind message: `None` is SQL NULL; `formats` follows the
/// protocol (no entry: all text; one entry: applies to all; else one per
/// value; 0 = text, 1 = binary). A simple query has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'a> {
    /// Parameter values, `$1` first.
    pub values: &'a [Option<Bytes>],
    /// Format codes.
    pub formats: &'a [i16],
}

/// A parameter as the analyzer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamText {
    /// The value as text.
    Text(String),
    /// SQL NULL.
    Null,
    /// No value bound (statement analysed without a Bind, e.g. by `check`).
    Unbound,
}

impl Params<'_> {
    /// No parameters (simple query, or offline analysis).
    pub const NONE: Params<'static> = Params {
        values: &[],
        formats: &[],
    };

    /// Whether these come from a Bind (so `$n` must resolve).
    pub fn is_bound(&self) -> bool {
        !self.values.is_empty()
    }

    /// `$n` (1-based) as text. Binary values: 2, 4 or 8 bytes are read as
    /// big-endian integers (int2/int4/int8 tenant ids), 16 bytes as a
    /// UUID; anything else as UTF-8 (text, varchar and enum labels are
    /// sent as their bytes in binary format too).
    pub fn text(&self, n: u32) -> ParamText {
        let Some(i) = (n as usize).checked_sub(1) else {
            return ParamText::Unbound;
        };
        let Some(v) = self.values.get(i) else {
            return ParamText::Unbound;
        };
        let Some(bytes) = v else {
            return ParamText::Null;
        };
        let format = match self.formats.len() {
            0 => 0,
            1 => self.formats[0],
            _ => self.formats.get(i).copied().unwrap_or(0),
        };
        if format != 1 {
            return ParamText::Text(String::from_utf8_lossy(bytes).into_owned());
        }
        let b: &[u8] = bytes;
        let text = match b.len() {
            2 => i16::from_be_bytes([b[0], b[1]]).to_string(),
            4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string(),
            8 => i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]).to_string(),
            16 => {
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                )
            }
            _ => String::from_utf8_lossy(b).into_owned(),
        };
        ParamText::Text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_text_binary_ints_uuid_and_null() {
        let vals = vec![
            Some(Bytes::from_static(b"eu")),
            Some(Bytes::from(42i32.to_be_bytes().to_vec())),
            None,
            Some(Bytes::from(vec![0x12u8; 16])),
        ];
        let p = Params {
            values: &vals,
            formats: &[0, 1, 0, 1],
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
}
