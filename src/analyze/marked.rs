//! A statement printed with marks: the region mark `$99999` and the
//! lifted-literal marks `$100000+slot` (see `lex`). The rewriter prints one
//! per statement shape; it is cut at its marks once here, so that each
//! execution only concatenates: no lexing, no parsing.

use super::lex::{self, LIFT_BASE, REGION_MARK};

/// A printed rewrite, cut at its marks.
#[derive(Debug, Clone)]
pub struct Marked {
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, Copy)]
enum Piece {
    /// Template text `[start, end)`.
    Text(usize, usize),
    /// Lifted literal slot; its placeholder text `[start, end)` as fallback.
    Lit(usize, usize, usize),
    /// The region.
    Region,
}

impl Marked {
    /// Cuts a printed statement (region `$99999`, literals `$100000+i`).
    pub fn new(text: String) -> Marked {
        let mut pieces = Vec::new();
        let mut plain = 0;
        for t in lex::Lexer::new(&text) {
            if t.kind != lex::Tok::Param {
                continue;
            }
            let n = text[t.start + 1..t.end].parse::<u32>().unwrap_or(0);
            let piece = if n == REGION_MARK {
                Piece::Region
            } else if n >= LIFT_BASE {
                Piece::Lit((n - LIFT_BASE) as usize, t.start, t.end)
            } else {
                continue;
            };
            if plain < t.start {
                pieces.push(Piece::Text(plain, t.start));
            }
            pieces.push(piece);
            plain = t.end;
        }
        if plain < text.len() {
            pieces.push(Piece::Text(plain, text.len()));
        }
        Marked { text, pieces }
    }

    /// The text as printed, with its marks.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The statement: the region mark becomes `region` (already SQL:
    /// `'eu'` or `$3`), each lifted literal the client's own text.
    pub fn render<'a>(&'a self, lit: &dyn Fn(usize) -> Option<&'a str>, region: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for p in &self.pieces {
            match *p {
                Piece::Text(a, b) => out.push_str(&self.text[a..b]),
                Piece::Region => out.push_str(region),
                Piece::Lit(slot, a, b) => out.push_str(lit(slot).unwrap_or(&self.text[a..b])),
            }
        }
        out
    }
}
