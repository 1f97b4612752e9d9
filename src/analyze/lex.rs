//! A small PostgreSQL lexer: just enough to split statements as psql does,
//! lift literals out of a statement (its *shape*), build fingerprints and
//! pre-scan for table names, without a full parse.
//!
//! It never fails: unterminated strings or comments run to the end of the
//! text, and the parser (which sees the same text) reports the error.

use std::ops::Range;

/// What a token is; only the distinctions the analyzer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Spaces, tabs, newlines.
    Space,
    /// `-- …` or `/* … */` (nested, as PostgreSQL nests them).
    Comment,
    /// An unquoted word (identifier or keyword).
    Word,
    /// `"…"`, or `U&"…"`.
    QuotedIdent,
    /// `'…'`, `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`.
    String,
    /// `$tag$…$tag$`.
    DollarString,
    /// `42`, `1.5e3`, `.5`.
    Number,
    /// `$1`.
    Param,
    /// `;`
    Semicolon,
    /// `(`
    Open,
    /// `)`
    Close,
    /// Any other character (operators, commas, `::`).
    Punct,
}

/// A token: its kind and byte range in the source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub kind: Tok,
    pub start: usize,
    pub end: usize,
}

/// Iterator over the tokens of a SQL text.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// End of a quoted run starting after the opening quote at `i`; `q`
    /// doubled is an escaped quote; `backslash` enables `\x` escapes.
    fn quoted_end(&self, mut i: usize, q: u8, backslash: bool) -> usize {
        while i < self.src.len() {
            let c = self.src[i];
            if backslash && c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                if self.at(i + 1) == q {
                    i += 2;
                    continue;
                }
                return i + 1;
            }
            i += 1;
        }
        self.src.len()
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let s = self.src;
        let start = self.pos;
        if start >= s.len() {
            return None;
        }
        let c = s[start];
        let c1 = self.at(start + 1);
        let (kind, end) = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                let mut i = start + 1;
                while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0c) {
                    i += 1;
                }
                (Tok::Space, i)
            }
            b'-' if c1 == b'-' => {
                let mut i = start + 2;
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
                (Tok::Comment, i)
            }
            b'/' if c1 == b'*' => {
                let mut depth = 1usize;
                let mut i = start + 2;
                while i < s.len() && depth > 0 {
                    if s[i] == b'/' && self.at(i + 1) == b'*' {
                        depth += 1;
                        i += 2;
                    } else if s[i] == b'*' && self.at(i + 1) == b'/' {
                        depth -= 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                (Tok::Comment, i.min(s.len()))
            }
            b'\'' => (Tok::String, self.quoted_end(start + 1, b'\'', false)),
            b'"' => (Tok::QuotedIdent, self.quoted_end(start + 1, b'"', false)),
            b'e' | b'E' if c1 == b'\'' => (Tok::String, self.quoted_end(start + 2, b'\'', true)),
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if c1 == b'\'' => {
                (Tok::String, self.quoted_end(start + 2, b'\'', false))
            }
            b'u' | b'U' if c1 == b'&' && self.at(start + 2) == b'\'' => {
                (Tok::String, self.quoted_end(start + 3, b'\'', false))
            }
            b'u' | b'U' if c1 == b'&' && self.at(start + 2) == b'"' => {
                (Tok::QuotedIdent, self.quoted_end(start + 3, b'"', false))
            }
            b'$' if c1.is_ascii_digit() => {
                let mut i = start + 1;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
                (Tok::Param, i)
            }
            b'$' if c1 == b'$' || is_ident_start(c1) => {
                // A dollar-quote tag `$tag$`; without the closing `$` it is
                // just punctuation.
                let mut i = start + 1;
                while i < s.len() && s[i] != b'$' && is_ident_char(s[i]) {
                    i += 1;
                }
                if self.at(i) == b'$' {
                    let tag = &s[start..=i];
                    let body = i + 1;
                    let end = find(&s[body..], tag)
                        .map(|p| body + p + tag.len())
                        .unwrap_or(s.len());
                    (Tok::DollarString, end)
                } else {
                    (Tok::Punct, start + 1)
                }
            }
            b'0'..=b'9' => (Tok::Number, self.number_end(start)),
            b'.' if c1.is_ascii_digit() => (Tok::Number, self.number_end(start)),
            b';' => (Tok::Semicolon, start + 1),
            b'(' => (Tok::Open, start + 1),
            b')' => (Tok::Close, start + 1),
            b':' if c1 == b':' => (Tok::Punct, start + 2),
            c if is_ident_start(c) => {
                let mut i = start + 1;
                while i < s.len() && is_ident_char(s[i]) {
                    i += 1;
                }
                (Tok::Word, i)
            }
            _ => {
                // Keep multi-byte UTF-8 characters whole.
                let mut i = start + 1;
                while i < s.len() && (s[i] & 0xC0) == 0x80 {
                    i += 1;
                }
                (Tok::Punct, i)
            }
        };
        // Never split a UTF-8 character: token ends land on char boundaries
        // because every delimiter we stop at is ASCII.
        let end = end.max(start + 1).min(s.len());
        self.pos = end;
        Some(Token { kind, start, end })
    }
}

impl Lexer<'_> {
    fn number_end(&self, start: usize) -> usize {
        let s = self.src;
        let mut i = start;
        while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'.' || s[i] == b'_') {
            i += 1;
        }
        if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
            let mut j = i + 1;
            if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
                j += 1;
            }
            if j < s.len() && s[j].is_ascii_digit() {
                i = j;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
            }
        }
        i
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a text into statements at `;` outside quotes, comments and
/// parentheses, as psql does. Segments holding only spaces and comments
/// are dropped. Ranges exclude the `;`.
pub(crate) fn split_statements(sql: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    if !sql.contains(';') {
        // One statement (the common case): no lexing needed here; a text
        // of only spaces and comments is dropped by the caller, whose shape
        // is then empty.
        if !sql.trim().is_empty() {
            out.push(0..sql.len());
        }
        return out;
    }
    let mut depth = 0usize;
    let mut seg_start = 0;
    let mut has_content = false;
    for t in Lexer::new(sql) {
        match t.kind {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            Tok::Semicolon if depth == 0 => {
                if has_content {
                    out.push(seg_start..t.start);
                }
                seg_start = t.end;
                has_content = false;
                continue;
            }
            _ => {}
        }
        if !matches!(t.kind, Tok::Space | Tok::Comment) {
            has_content = true;
        }
    }
    if has_content {
        out.push(seg_start..sql.len());
    }
    out
}

/// Keywords after which a literal is an expression operand (so it can be
/// replaced by a placeholder without changing the grammar).
const LIFT_AFTER_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "where",
    "select",
    "then",
    "else",
    "when",
    "like",
    "ilike",
    "limit",
    "offset",
    "between",
    "returning",
    "values",
];

/// First placeholder number used for lifted literals: `$100000` is literal
/// slot 0. PostgreSQL allows at most 65535 parameters, so real parameters
/// never reach it.
pub(crate) const LIFT_BASE: u32 = 100_000;
/// The placeholder standing for the injected region in rewrite templates.
pub(crate) const REGION_MARK: u32 = 99_999;

/// The result of scanning one statement.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The text with liftable literals replaced by `$LIFT_BASE+i`, comments
    /// dropped and spaces collapsed: the cache key and the text parsed.
    pub shape: String,
    /// Byte ranges (in the scanned text) of the lifted literals, by slot.
    pub lits: Vec<Range<usize>>,
    /// Whether a comment holds `geogate:allow_scatter`.
    pub hint: bool,
    /// Binary operators and AND/OR seen (a bound on expression depth).
    pub operators: usize,
    /// The highest `$n` seen.
    pub max_param: u32,
    /// A placeholder at or above `REGION_MARK` was seen (lifting disabled).
    pub huge_param: bool,
}

/// Scans a statement: shape, lifted literals, hint, operator count.
/// `lit_base` numbers the first lifted literal (slots continue across the
/// statements of one text).
pub(crate) fn scan(sql: &str, lit_base: usize) -> Scan {
    let mut sc = Scan {
        shape: String::with_capacity(sql.len()),
        ..Scan::default()
    };
    let mut prev: Option<Token> = None;
    let mut pending_space = false;
    for t in Lexer::new(sql) {
        let text = &sql[t.start..t.end];
        match t.kind {
            Tok::Space => {
                pending_space = true;
                continue;
            }
            Tok::Comment => {
                if contains_ignore_case(text, "geogate:allow_scatter") {
                    sc.hint = true;
                }
                pending_space = true;
                continue;
            }
            _ => {}
        }
        if pending_space && !sc.shape.is_empty() {
            sc.shape.push(' ');
        }
        pending_space = false;
        match t.kind {
            Tok::String | Tok::Number if liftable(sql, prev) => {
                let slot = lit_base + sc.lits.len();
                sc.lits.push(t.start..t.end);
                sc.shape.push('$');
                push_decimal(&mut sc.shape, LIFT_BASE as usize + slot);
            }
            Tok::Param => {
                let n = text[1..].parse::<u32>().unwrap_or(u32::MAX);
                if n >= REGION_MARK {
                    sc.huge_param = true;
                }
                sc.max_param = sc.max_param.max(n);
                sc.shape.push_str(text);
            }
            Tok::Word => {
                if text.eq_ignore_ascii_case("and") || text.eq_ignore_ascii_case("or") {
                    sc.operators += 1;
                }
                sc.shape.push_str(text);
            }
            Tok::Punct => {
                if text != "," && text != "." {
                    sc.operators += 1;
                }
                sc.shape.push_str(text);
            }
            _ => sc.shape.push_str(text),
        }
        prev = Some(t);
    }
    sc
}

/// Appends a number in decimal without the formatting machinery (hot path).
fn push_decimal(out: &mut String, mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

fn liftable(sql: &str, prev: Option<Token>) -> bool {
    let Some(p) = prev else { return false };
    let text = &sql[p.start..p.end];
    match p.kind {
        Tok::Open => true,
        Tok::Punct => !matches!(text, "." | "::" | "$"),
        Tok::Word => LIFT_AFTER_WORDS
            .iter()
            .any(|w| text.eq_ignore_ascii_case(w)),
        _ => false,
    }
}

/// Case-insensitive substring test (ASCII).
pub(crate) fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.len() > h.len() {
        return false;
    }
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// A fingerprint of a shape: every literal and lifted literal becomes `?`,
/// parameters stay `$n`, `IN (?, ?, …)` collapses to `IN (?)`. It never
/// holds a literal value, so it may go to logs and metrics.
pub(crate) fn fingerprint(shape: &str) -> String {
    let mut out = String::with_capacity(shape.len());
    for t in Lexer::new(shape) {
        let text = &shape[t.start..t.end];
        match t.kind {
            Tok::String | Tok::DollarString | Tok::Number => out.push('?'),
            Tok::Param => {
                let n = text[1..].parse::<u32>().unwrap_or(0);
                if n >= LIFT_BASE {
                    out.push('?');
                } else {
                    out.push_str(text);
                }
            }
            Tok::Comment => {}
            Tok::Space => out.push(' '),
            _ => out.push_str(text),
        }
        // Collapse lists of placeholders: "?, ?" → "?".
        while out.ends_with("?, ?") || out.ends_with("?,?") {
            let cut = if out.ends_with("?, ?") { 3 } else { 2 };
            out.truncate(out.len() - cut);
        }
    }
    out
}

/// The first `n` words of a statement, lower-cased (comments skipped).
pub(crate) fn leading_words(sql: &str, n: usize) -> Vec<String> {
    Lexer::new(sql)
        .filter(|t| !matches!(t.kind, Tok::Space | Tok::Comment))
        .take(n)
        .map(|t| {
            if t.kind == Tok::Word {
                sql[t.start..t.end].to_ascii_lowercase()
            } else {
                String::new()
            }
        })
        .collect()
}

/// Replaces placeholders in a printed template: lifted literal slots by
/// their original text (`lit(slot)`), the region mark by `region`.
pub(crate) fn render(
    template: &str,
    lit: &dyn Fn(usize) -> Option<String>,
    region: &str,
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    for t in Lexer::new(template) {
        let text = &template[t.start..t.end];
        if t.kind == Tok::Param {
            let n = text[1..].parse::<u32>().unwrap_or(0);
            if n == REGION_MARK {
                out.push_str(region);
                continue;
            }
            if n >= LIFT_BASE
                && let Some(v) = lit((n - LIFT_BASE) as usize)
            {
                out.push_str(&v);
                continue;
            }
        }
        out.push_str(text);
    }
    out
}

/// Decodes a string literal token (`'a''b'`, `E'a\'b'`) to its value;
/// `None` for other tokens (numbers are returned as written).
pub(crate) fn literal_value(tok: &str) -> Option<String> {
    let b = tok.as_bytes();
    match b.first()? {
        b'\'' => Some(unquote(&tok[1..], false)),
        b'e' | b'E' if b.get(1) == Some(&b'\'') => Some(unquote(&tok[2..], true)),
        b'0'..=b'9' | b'.' => Some(tok.to_string()),
        _ => None,
    }
}

fn unquote(body: &str, backslash: bool) -> String {
    let body = body.strip_suffix('\'').unwrap_or(body);
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.peek() == Some(&'\'') {
            chars.next();
            out.push('\'');
        } else if backslash && c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether any word or quoted identifier of `sql` is one of `names`
/// (lower case). Conservative: `U&"…"` identifiers always match, since
/// their escapes could spell any name.
pub(crate) fn mentions_any(sql: &str, names: &std::collections::HashSet<String>) -> bool {
    let mut buf = String::new();
    for t in Lexer::new(sql) {
        let text = &sql[t.start..t.end];
        let word = match t.kind {
            Tok::Word => text,
            Tok::QuotedIdent => {
                if text.starts_with(['u', 'U']) {
                    return true;
                }
                text.trim_matches('"')
            }
            _ => continue,
        };
        buf.clear();
        buf.push_str(word);
        if buf.is_ascii() {
            buf.make_ascii_lowercase();
        } else {
            buf = buf.to_lowercase();
        }
        if names.contains(buf.as_str()) {
            return true;
        }
        // `users$x` is one PostgreSQL word; test its parts too, to stay
        // on the safe side.
        if buf.contains('$') && buf.split('$').any(|p| names.contains(p)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ignores_semicolons_in_strings_comments_dollar_quotes_and_parens() {
        let sql = "select ';'; -- a;b\n select $$x;y$$; /* c; */ select (1;2); ;  ";
        let parts: Vec<&str> = split_statements(sql)
            .into_iter()
            .map(|r| sql[r].trim())
            .collect();
        assert_eq!(
            parts,
            vec![
                "select ';'",
                "-- a;b\n select $$x;y$$",
                "/* c; */ select (1;2)"
            ]
        );
    }

    #[test]
    fn scan_lifts_operand_literals_but_not_typed_literals() {
        let sc = scan(
            "SELECT * FROM t WHERE a = 'x' AND d > DATE '2020-01-01' LIMIT 5",
            0,
        );
        assert_eq!(
            sc.shape,
            "SELECT * FROM t WHERE a = $100000 AND d > DATE '2020-01-01' LIMIT $100001"
        );
        assert_eq!(sc.lits.len(), 2);
    }

    #[test]
    fn fingerprint_never_contains_literals() {
        let sc = scan(
            "select * from t where a in ('x','y') and b = DATE 'secret' and c = $1",
            0,
        );
        let fp = fingerprint(&sc.shape);
        assert_eq!(
            fp,
            "select * from t where a in (?) and b = DATE ? and c = $1"
        );
    }

    #[test]
    fn hint_comment_is_found_case_insensitively() {
        assert!(scan("/*+ GeoGate:Allow_Scatter */ select 1", 0).hint);
        assert!(!scan("select '/*+ geogate:allow_scatter */'", 0).hint);
    }

    #[test]
    fn literal_values_are_unescaped() {
        assert_eq!(literal_value("'it''s'").as_deref(), Some("it's"));
        assert_eq!(literal_value("E'a\\'b'").as_deref(), Some("a'b"));
        assert_eq!(literal_value("42").as_deref(), Some("42"));
    }

    #[test]
    fn mentions_any_matches_words_and_quoted_identifiers_only() {
        let names: std::collections::HashSet<String> = ["users".to_string()].into();
        assert!(mentions_any("select * from public.Users", &names));
        assert!(mentions_any("select * from \"USERS\"", &names));
        assert!(mentions_any("select * from U&\"\\0075sers\"", &names));
        assert!(!mentions_any("select * from users_archive", &names));
        assert!(!mentions_any("select 1 -- users", &names));
    }
}
