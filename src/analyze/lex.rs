//! A small PostgreSQL lexer: just enough to split statements as psql does,
//! lift literals out of a statement (its *shape*), build fingerprints and
//! pre-scan for table names, without a full parse.
//!
//! It never fails: unterminated strings or comments run to the end of the
//! text, and the parser (which sees the same text) reports the error.

use std::borrow::Cow;
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
    /// `standard_conforming_strings`: when off, `'…'` and `N'…'` strings
    /// take backslash escapes, as PostgreSQL's scanner does.
    scs: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer with `standard_conforming_strings = on` (PostgreSQL's default).
    pub fn new(src: &'a str) -> Self {
        Lexer::with_scs(src, true)
    }

    /// A lexer for a session's `standard_conforming_strings` setting.
    pub fn with_scs(src: &'a str, scs: bool) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
            scs,
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

/// Byte classes, looked up once per byte (the lexer's inner loops).
const IDENT_START: u8 = 1;
const IDENT_CHAR: u8 = 2;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            t[c] = IDENT_START | IDENT_CHAR;
        } else if b.is_ascii_digit() || b == b'$' {
            t[c] = IDENT_CHAR;
        }
        c += 1;
    }
    t
};

fn is_ident_start(c: u8) -> bool {
    CLASS[c as usize] & IDENT_START != 0
}

fn is_ident_char(c: u8) -> bool {
    CLASS[c as usize] & IDENT_CHAR != 0
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.token()
    }
}

impl Lexer<'_> {
    /// Skips what a [`Tok::Space`] token would cover; whether there was any.
    #[inline(always)]
    fn skip_space(&mut self) -> bool {
        let s = self.src;
        let start = self.pos;
        let mut i = start;
        while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0c) {
            i += 1;
        }
        self.pos = i;
        i > start
    }

    /// The next token. Inlined into [`scan_statements`], the loop every
    /// statement goes through (a call per token costs as much as lexing
    /// a short one); other callers go through [`Iterator::next`].
    #[inline(always)]
    fn token(&mut self) -> Option<Token> {
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
                // PostgreSQL ends a `--` comment at a newline or a carriage
                // return (scan.l: `comment ("--"{non_newline}*)`).
                let mut i = start + 2;
                while i < s.len() && s[i] != b'\n' && s[i] != b'\r' {
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
            b'\'' => (Tok::String, self.quoted_end(start + 1, b'\'', !self.scs)),
            b'"' => (Tok::QuotedIdent, self.quoted_end(start + 1, b'"', false)),
            b'e' | b'E' if c1 == b'\'' => (Tok::String, self.quoted_end(start + 2, b'\'', true)),
            // N'…' is an ordinary string after the NCHAR keyword: it
            // follows standard_conforming_strings; B'…' and X'…' never
            // take backslash escapes.
            b'n' | b'N' if c1 == b'\'' => {
                (Tok::String, self.quoted_end(start + 2, b'\'', !self.scs))
            }
            b'b' | b'B' | b'x' | b'X' if c1 == b'\'' => {
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
pub(crate) fn split_statements(sql: &str, scs: bool) -> Vec<Range<usize>> {
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
    for t in Lexer::with_scs(sql, scs) {
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

/// First placeholder number used for lifted literals: `$100000` is literal
/// slot 0. PostgreSQL allows at most 65535 parameters, so real parameters
/// never reach it.
pub(crate) const LIFT_BASE: u32 = 100_000;
/// The placeholder standing for the injected region in rewrite templates.
pub(crate) const REGION_MARK: u32 = 99_999;

/// The result of scanning one statement.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scan {
    /// The text with liftable literals replaced by `$LIFT_BASE+i`, comments
    /// dropped and spaces collapsed: the cache key and the text parsed.
    pub shape: String,
    /// Byte ranges (in the scanned text) of the lifted literals, by slot.
    pub lits: Vec<Range<usize>>,
    /// Whether a comment is exactly `/*+ geogate:allow_scatter */`.
    pub hint: bool,
    /// Binary operators and AND/OR seen (a bound on expression depth).
    pub operators: usize,
    /// The highest `$n` seen.
    pub max_param: u32,
    /// A placeholder at or above `REGION_MARK` was seen (lifting disabled).
    pub huge_param: bool,
    /// Something the lexer cannot decide exactly as PostgreSQL would
    /// (the statement is then refused when it names a regional table).
    pub undecidable: Option<&'static str>,
}

impl Scan {
    /// Empties it for the next statement, keeping the buffers' capacity.
    /// (Destructured: a field added to `Scan` must be reset here too.)
    fn reset(&mut self) {
        let Scan {
            shape,
            lits,
            hint,
            operators,
            max_param,
            huge_param,
            undecidable,
        } = self;
        shape.clear();
        lits.clear();
        *hint = false;
        *operators = 0;
        *max_param = 0;
        *huge_param = false;
        *undecidable = None;
    }
}

impl Scan {
    /// No statement scanned yet (what `Default` gives, as a constant).
    const EMPTY: Scan = Scan {
        shape: String::new(),
        lits: Vec::new(),
        hint: false,
        operators: 0,
        max_param: 0,
        huge_param: false,
        undecidable: None,
    };
}

/// Whether a comment is the scatter hint: exactly `/*+ geogate:allow_scatter */`
/// (spaces around the name and its case do not matter; nothing else may be
/// in the comment).
pub(crate) fn is_hint(comment: &str) -> bool {
    comment
        .strip_prefix("/*+")
        .and_then(|c| c.strip_suffix("*/"))
        .is_some_and(|body| body.trim().eq_ignore_ascii_case("geogate:allow_scatter"))
}

/// Scans a statement: shape, lifted literals, hint, operator count.
/// `lit_base` numbers the first lifted literal (slots continue across the
/// statements of one text). `scs` is the session's
/// `standard_conforming_strings`. (The analyzer scans a whole text with
/// [`scan_statements`]; this one statement at a time is its reference.)
#[cfg(test)]
pub(crate) fn scan(sql: &str, lit_base: usize, scs: bool) -> Scan {
    let mut s = Scanner::new(Scan::default(), 0, lit_base);
    for t in Lexer::with_scs(sql, scs) {
        s.push(sql, t, scs);
    }
    s.finish(sql);
    s.sc
}

thread_local! {
    /// The buffers [`scan_statements`] builds shapes in, kept per thread:
    /// on a cache hit (the usual case) a shape is only looked up, so it
    /// need not be allocated for each statement.
    static SCAN_BUF: std::cell::Cell<Scan> = const { std::cell::Cell::new(Scan::EMPTY) };
}

/// A kept buffer larger than this is dropped (one huge text must not pin
/// its size for the thread's life).
const KEEP_BUF: usize = 64 * 1024;

/// Splits a text into statements as [`split_statements`] does and scans
/// each ([`scan`], literal slots from 0 in each), lexing the text once:
/// the hot path of every simple Query. `each` gets each statement's range
/// and scan, in order; statements of only spaces and comments are
/// dropped. The scan is only lent: its buffers are reused for the next
/// statement.
pub(crate) fn scan_statements(sql: &str, scs: bool, mut each: impl FnMut(Range<usize>, &Scan)) {
    // Taken, not borrowed: `each` may analyse another text (EXECUTE's
    // prepared statement), which then starts from empty buffers.
    let mut buf = SCAN_BUF.with(std::cell::Cell::take);
    buf.shape.reserve(sql.len().min(1024));
    let mut cur = Scanner::new(buf, 0, 0);
    let mut depth = 0usize;
    let mut seg_start = 0;
    let mut lexer = Lexer::with_scs(sql, scs);
    loop {
        // Spaces (every other token) only make a space due in the shape:
        // skipped here, without making a token of them.
        if lexer.skip_space() {
            cur.pending_space = true;
        }
        let Some(t) = lexer.token() else { break };
        match t.kind {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            Tok::Semicolon if depth == 0 => {
                let sc = cur.finish(sql);
                if !sc.shape.is_empty() {
                    each(seg_start..t.start, sc);
                }
                cur.restart(t.end);
                seg_start = t.end;
                continue;
            }
            _ => {}
        }
        cur.push(sql, t, scs);
    }
    let sc = cur.finish(sql);
    if !sc.shape.is_empty() {
        each(seg_start..sql.len(), sc);
    }
    if cur.sc.shape.capacity() <= KEEP_BUF && cur.sc.lits.capacity() <= KEEP_BUF {
        SCAN_BUF.with(|b| b.set(cur.sc));
    }
}

/// The state of scanning one statement, token by token.
///
/// The shape is mostly the text itself: tokens written as they are, with
/// one space between them, go on a pending *run* of the source that is
/// copied in one piece when something else must be written (a
/// placeholder, a collapsed space), instead of token by token.
struct Scanner {
    sc: Scan,
    prev: Option<Token>,
    pending_space: bool,
    /// Where the statement starts in the text: lifted literals' ranges
    /// are relative to it.
    base: usize,
    lit_base: usize,
    /// The run of source not yet copied to the shape; it ends where the
    /// last significant token (or the statement's start) ends.
    run: Range<usize>,
}

impl Scanner {
    /// A scanner filling `sc` (its buffers are cleared, their capacity kept).
    fn new(sc: Scan, base: usize, lit_base: usize) -> Scanner {
        let mut s = Scanner {
            sc,
            prev: None,
            pending_space: false,
            base,
            lit_base,
            run: base..base,
        };
        s.restart(base);
        s
    }

    /// Starts the next statement, at `base`, in the same buffers.
    fn restart(&mut self, base: usize) {
        self.sc.reset();
        self.prev = None;
        self.pending_space = false;
        self.base = base;
        self.run = base..base;
    }

    /// The statement's scan, its shape complete.
    fn finish(&mut self, sql: &str) -> &Scan {
        self.flush(sql);
        &self.sc
    }

    /// Copies the pending run to the shape.
    fn flush(&mut self, sql: &str) {
        if self.run.start < self.run.end {
            self.sc.shape.push_str(&sql[self.run.clone()]);
            self.run.start = self.run.end;
        }
    }

    /// Whether a space goes before the next significant token: spaces or
    /// comments came before it, and something is written already.
    fn space_due(&self) -> bool {
        self.pending_space && !(self.sc.shape.is_empty() && self.run.is_empty())
    }

    /// Writes token `t` as it is.
    fn verbatim(&mut self, sql: &str, t: Token) {
        let gap = if self.space_due() { 1 } else { 0 };
        // The run goes on when the source already has what the shape
        // needs between the two: nothing, or exactly one space.
        if self.run.end + gap == t.start && (gap == 0 || sql.as_bytes()[self.run.end] == b' ') {
            self.run.end = t.end;
        } else {
            self.flush(sql);
            if gap == 1 {
                self.sc.shape.push(' ');
            }
            self.run = t.start..t.end;
        }
        self.pending_space = false;
    }

    /// Starts writing token `t` differently from the source: the run and
    /// any space due are written; the caller writes the token.
    #[inline]
    fn rewritten(&mut self, sql: &str) {
        self.flush(sql);
        if self.pending_space && !self.sc.shape.is_empty() {
            self.sc.shape.push(' ');
        }
        self.pending_space = false;
    }

    /// Takes the next token of the statement (`sql` is the whole text).
    fn push(&mut self, sql: &str, t: Token, scs: bool) {
        let b = &sql.as_bytes()[t.start..t.end];
        match t.kind {
            Tok::Space => {
                self.pending_space = true;
                return;
            }
            Tok::Comment => {
                let text = &sql[t.start..t.end];
                if is_hint(text) {
                    self.sc.hint = true;
                }
                if text.starts_with("/*") && !(text.len() >= 4 && text.ends_with("*/")) {
                    self.sc.undecidable = Some("unterminated comment");
                }
                self.pending_space = true;
                return;
            }
            Tok::String => {
                if b.len() < 2 || b[b.len() - 1] != b'\'' {
                    self.sc.undecidable = Some("unterminated string");
                }
                let u_and = matches!(b[0], b'u' | b'U');
                if u_and && !scs {
                    // U&'…' (with UESCAPE): PostgreSQL refuses it when
                    // standard_conforming_strings is off; its escapes
                    // are never decoded here.
                    self.sc.undecidable = Some("U& string with standard_conforming_strings off");
                }
                if liftable(sql, self.prev) {
                    self.lift(sql, t);
                } else if !u_and
                    && !scs
                    && b.contains(&b'\\')
                    && matches!(b[0], b'\'' | b'n' | b'N')
                {
                    // With standard_conforming_strings off a plain string
                    // with a backslash is written as the E'' string
                    // PostgreSQL reads it as.
                    self.rewritten(sql);
                    self.sc.shape.push('E');
                    let quote = if b[0] == b'\'' { t.start } else { t.start + 1 };
                    self.run = quote..t.end;
                } else {
                    self.verbatim(sql, t);
                }
            }
            Tok::Number if liftable(sql, self.prev) => self.lift(sql, t),
            Tok::QuotedIdent => {
                if b.len() < 2
                    || b[b.len() - 1] != b'"'
                    || (b.len() < 4 && matches!(b[0], b'u' | b'U'))
                {
                    self.sc.undecidable = Some("unterminated quoted identifier");
                }
                self.verbatim(sql, t);
            }
            Tok::DollarString => {
                let text = &sql[t.start..t.end];
                let tag_len = text[1..].find('$').map_or(text.len(), |i| i + 2);
                if text.len() < 2 * tag_len || !text.ends_with(&text[..tag_len]) {
                    self.sc.undecidable = Some("unterminated dollar-quoted string");
                }
                self.verbatim(sql, t);
            }
            Tok::Param => {
                let n = sql[t.start + 1..t.end].parse::<u32>().unwrap_or(u32::MAX);
                if n >= REGION_MARK {
                    self.sc.huge_param = true;
                }
                self.sc.max_param = self.sc.max_param.max(n);
                self.verbatim(sql, t);
            }
            Tok::Word => {
                if b.eq_ignore_ascii_case(b"and") || b.eq_ignore_ascii_case(b"or") {
                    self.sc.operators += 1;
                }
                self.verbatim(sql, t);
            }
            Tok::Punct => {
                if !matches!(b, b"," | b".") {
                    self.sc.operators += 1;
                }
                self.verbatim(sql, t);
            }
            _ => self.verbatim(sql, t),
        }
        self.prev = Some(t);
    }

    /// Writes a placeholder for the literal `t` and records its range.
    #[inline]
    fn lift(&mut self, sql: &str, t: Token) {
        self.rewritten(sql);
        let slot = self.lit_base + self.sc.lits.len();
        self.sc.lits.push(t.start - self.base..t.end - self.base);
        push_placeholder(&mut self.sc.shape, slot);
        self.run = t.end..t.end;
    }
}

/// The text with comments dropped and spaces collapsed, literals kept
/// (written as the parser must read them): what is parsed when the shape
/// does not parse. Never the raw text: the parser's own tokenizer must not
/// decide where comments end.
pub(crate) fn plain(sql: &str, scs: bool) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut pending_space = false;
    for t in Lexer::with_scs(sql, scs) {
        let text = &sql[t.start..t.end];
        if matches!(t.kind, Tok::Space | Tok::Comment) {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        let b = text.as_bytes();
        if t.kind == Tok::String && !scs && text.contains('\\') && b[0] == b'\'' {
            out.push('E');
            out.push_str(text);
        } else if t.kind == Tok::String
            && !scs
            && text.contains('\\')
            && matches!(b[0], b'n' | b'N')
        {
            out.push('E');
            out.push_str(&text[1..]);
        } else {
            out.push_str(text);
        }
    }
    out
}

/// Appends the placeholder of lifted literal `slot` (`$100000` for 0).
fn push_placeholder(out: &mut String, slot: usize) {
    // The first few spelled out: statements rarely lift more.
    const FIRST: [&str; 8] = [
        "$100000", "$100001", "$100002", "$100003", "$100004", "$100005", "$100006", "$100007",
    ];
    if let Some(p) = FIRST.get(slot) {
        out.push_str(p);
        return;
    }
    out.push_str(dollar((LIFT_BASE as usize + slot) as u64, &mut [0u8; 21]));
}

/// `$n`, written into `buf` (no heap allocation per statement).
pub(crate) fn dollar(mut n: u64, buf: &mut [u8; 21]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    buf[at] = b'$';
    // Only ASCII was written.
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// Whether a literal after token `prev` is an expression operand.
#[inline]
fn liftable(sql: &str, prev: Option<Token>) -> bool {
    let Some(p) = prev else { return false };
    let b = &sql.as_bytes()[p.start..p.end];
    match p.kind {
        Tok::Open => true,
        Tok::Punct => !matches!(b, b"." | b"::" | b"$"),
        Tok::Word => lifts_after_word(b),
        _ => false,
    }
}

/// Whether `word` (any case) is a keyword after which a literal is an
/// expression operand (so it can be replaced by a placeholder without
/// changing the grammar).
fn lifts_after_word(word: &[u8]) -> bool {
    // Lower-cased into a buffer as long as the longest keyword.
    let mut buf = [0u8; 9];
    let Some(lower) = buf.get_mut(..word.len()) else {
        return false;
    };
    for (d, c) in lower.iter_mut().zip(word) {
        *d = c.to_ascii_lowercase();
    }
    matches!(
        &*lower,
        b"and"
            | b"or"
            | b"not"
            | b"where"
            | b"select"
            | b"then"
            | b"else"
            | b"when"
            | b"like"
            | b"ilike"
            | b"limit"
            | b"offset"
            | b"between"
            | b"returning"
            | b"values"
    )
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

/// Decodes a string literal token (`'a''b'`, `E'a\\'b'`, and with
/// `standard_conforming_strings` off `'a\\'b'`) to its value; `None` for
/// tokens it cannot decode exactly (`U&'…'`, `B'…'`, invalid escapes).
/// Numbers are returned as written. A value written as is (no escape to
/// decode: the usual literal) is borrowed from `tok`, not copied.
pub(crate) fn literal_value(tok: &str, scs: bool) -> Option<Cow<'_, str>> {
    let b = tok.as_bytes();
    match b.first()? {
        b'\'' => unquote(&tok[1..], !scs),
        b'n' | b'N' if b.get(1) == Some(&b'\'') => unquote(&tok[2..], !scs),
        b'e' | b'E' if b.get(1) == Some(&b'\'') => unquote(&tok[2..], true),
        b'0'..=b'9' | b'.' => Some(Cow::Borrowed(tok)),
        _ => None,
    }
}

/// The value of a quoted body (after the opening quote, with the closing
/// one); with `backslash`, PostgreSQL's escape-string rules: `\b \f \n \r
/// \t`, octal `\ooo`, hex `\xhh`, `\uXXXX`, `\UXXXXXXXX`, any other
/// character stands for itself. The bytes must form UTF-8.
fn unquote(body: &str, backslash: bool) -> Option<Cow<'_, str>> {
    let body = body.strip_suffix('\'')?;
    let b = body.as_bytes();
    if !b
        .iter()
        .any(|&c| c == b'\'' || c == 0 || (backslash && c == b'\\'))
    {
        // Nothing to decode (the usual literal): the body as written.
        return Some(Cow::Borrowed(body));
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' {
            // Inside a complete token a quote is always doubled.
            if b.get(i + 1) != Some(&b'\'') {
                return None;
            }
            out.push(b'\'');
            i += 2;
        } else if backslash && c == b'\\' {
            let n = *b.get(i + 1)?;
            i += 2;
            match n {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'0'..=b'7' => {
                    let mut v = u32::from(n - b'0');
                    let mut k = 0;
                    while k < 2 && matches!(b.get(i), Some(b'0'..=b'7')) {
                        v = v * 8 + u32::from(b[i] - b'0');
                        i += 1;
                        k += 1;
                    }
                    out.push((v & 0xff) as u8);
                }
                b'x' if b.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                    let mut v = 0u32;
                    let mut k = 0;
                    while k < 2 && b.get(i).is_some_and(u8::is_ascii_hexdigit) {
                        v = v * 16 + (b[i] as char).to_digit(16)?;
                        i += 1;
                        k += 1;
                    }
                    out.push(v as u8);
                }
                b'u' | b'U' => {
                    let len = if n == b'u' { 4 } else { 8 };
                    let hex = body.get(i..i + len)?;
                    let v = u32::from_str_radix(hex, 16).ok()?;
                    // Surrogate pairs and invalid code points: refuse.
                    let ch = char::from_u32(v)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += len;
                }
                other => out.push(other),
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Whether any word or quoted identifier of `sql` is one of `names`
/// (lower case). Conservative: `U&"…"` identifiers always match, since
/// their escapes could spell any name.
pub(crate) fn mentions_any(
    sql: &str,
    names: &std::collections::HashSet<String>,
    scs: bool,
) -> bool {
    let mut buf = String::new();
    for t in Lexer::with_scs(sql, scs) {
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

/// The significant tokens of a text (no spaces, no comments).
fn significant(sql: &str, scs: bool) -> impl Iterator<Item = Token> + '_ {
    Lexer::with_scs(sql, scs).filter(|t| !matches!(t.kind, Tok::Space | Tok::Comment))
}

/// Whether a word (unquoted, any case) occurs in the text's code.
pub(crate) fn has_word(sql: &str, word: &str, scs: bool) -> bool {
    significant(sql, scs)
        .any(|t| t.kind == Tok::Word && sql[t.start..t.end].eq_ignore_ascii_case(word))
}

/// Whether word `a` is directly followed by word `b` somewhere.
pub(crate) fn has_words(sql: &str, a: &str, b: &str, scs: bool) -> bool {
    let toks: Vec<Token> = significant(sql, scs).collect();
    toks.windows(2).any(|w| {
        w[0].kind == Tok::Word
            && w[1].kind == Tok::Word
            && sql[w[0].start..w[0].end].eq_ignore_ascii_case(a)
            && sql[w[1].start..w[1].end].eq_ignore_ascii_case(b)
    })
}

/// Whether a statement the parser could not read may hold a query
/// (`SELECT`, `VALUES`, `TABLE`, `WITH`, `EXECUTE` after `AS`, …): DDL
/// that fails to parse is global only when it holds none.
pub(crate) fn looks_like_query(sql: &str, scs: bool) -> bool {
    ["select", "values", "execute", "returning"]
        .iter()
        .any(|w| has_word(sql, w, scs))
        || has_words(sql, "as", "table", scs)
        || has_words(sql, "as", "with", scs)
        || significant(sql, scs)
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| {
                w[0].kind == Tok::Word
                    && sql[w[0].start..w[0].end].eq_ignore_ascii_case("as")
                    && w[1].kind == Tok::Open
            })
}

/// Whether the body of a string or dollar-quoted string (a DO block's
/// code) names one of `names`, also in strings nested in that code.
pub(crate) fn strings_mention_any(
    sql: &str,
    names: &std::collections::HashSet<String>,
    scs: bool,
) -> bool {
    strings_mention_depth(sql, names, scs, 0)
}

fn strings_mention_depth(
    sql: &str,
    names: &std::collections::HashSet<String>,
    scs: bool,
    depth: usize,
) -> bool {
    if depth > 8 {
        // Deeper than any real DO block nests quotes: assume it does.
        return true;
    }
    significant(sql, scs).any(|t| {
        let text = &sql[t.start..t.end];
        let body: String = match t.kind {
            Tok::DollarString => {
                let tag_len = text[1..].find('$').map_or(text.len(), |i| i + 2);
                let tag = text.get(..tag_len).unwrap_or(text);
                let closed = text.len() >= 2 * tag_len && text.ends_with(tag);
                let body = if closed {
                    text.get(tag_len..text.len() - tag_len)
                } else {
                    text.get(tag_len..)
                };
                body.unwrap_or("").to_string()
            }
            Tok::String => {
                let start = text.find('\'').map_or(text.len(), |i| i + 1);
                let inner = &text[start..];
                let inner = inner.strip_suffix('\'').unwrap_or(inner);
                inner.replace("''", "'")
            }
            _ => return false,
        };
        // Every shorter body ends the recursion; an empty one names nothing.
        !body.is_empty()
            && body.len() < text.len()
            && (mentions_any(&body, names, true)
                || strings_mention_depth(&body, names, true, depth + 1))
    })
}

/// Folds a name token as PostgreSQL does (unquoted: lower case; quoted:
/// as written, `""` → `"`); `None` for `U&"…"` (escapes not decoded).
fn name_of(sql: &str, t: Token) -> Option<String> {
    let text = &sql[t.start..t.end];
    match t.kind {
        Tok::Word => Some(text.to_lowercase()),
        Tok::QuotedIdent if text.starts_with('"') => Some(
            text.strip_prefix('"')?
                .strip_suffix('"')?
                .replace("\"\"", "\""),
        ),
        _ => None,
    }
}

/// The table names of REFRESH MATERIALIZED VIEW, LOCK [TABLE] and IMPORT
/// INTO (the last part of each, folded). A name that cannot be read
/// (`U&"…"`) is `"\0?"`, which no table is called.
pub(crate) fn table_names_after(sql: &str, verb: &str, scs: bool) -> Vec<String> {
    const SKIP: &[&str] = &[
        "refresh",
        "materialized",
        "view",
        "concurrently",
        "lock",
        "table",
        "only",
        "import",
        "into",
    ];
    const STOP: &[&str] = &[
        "in",
        "nowait",
        "with",
        "csv",
        "avro",
        "delimited",
        "pgdump",
        "mysqldump",
        "parquet",
    ];
    let toks: Vec<Token> = significant(sql, scs).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let text = &sql[t.start..t.end];
        if t.kind == Tok::Word
            && SKIP.iter().any(|w| text.eq_ignore_ascii_case(w))
            && out.is_empty()
        {
            i += 1;
            continue;
        }
        if t.kind == Tok::Word && STOP.iter().any(|w| text.eq_ignore_ascii_case(w)) {
            break;
        }
        match t.kind {
            Tok::Word | Tok::QuotedIdent => {
                // The last part of a dotted name.
                let mut last = name_of(sql, t).unwrap_or_else(|| "\u{0}?".into());
                while toks.get(i + 1).is_some_and(|n| &sql[n.start..n.end] == ".")
                    && let Some(n) = toks.get(i + 2)
                {
                    last = name_of(sql, *n).unwrap_or_else(|| "\u{0}?".into());
                    i += 2;
                }
                out.push(last);
                if verb != "lock" {
                    break;
                }
            }
            Tok::Punct if verb == "lock" && (text == "," || text == "*") => {}
            _ => break,
        }
        i += 1;
    }
    out
}

/// The column list after the table name of `IMPORT INTO t (a, b)`.
pub(crate) fn column_list_after_table(sql: &str, scs: bool) -> Vec<String> {
    let toks: Vec<Token> = significant(sql, scs).collect();
    let Some(open) = toks.iter().position(|t| t.kind == Tok::Open) else {
        return Vec::new();
    };
    toks[open + 1..]
        .iter()
        .take_while(|t| t.kind != Tok::Close)
        .filter_map(|t| name_of(sql, *t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str, scs: bool) -> Vec<&str> {
        split_statements(sql, scs)
            .into_iter()
            .map(|r| sql[r].trim())
            .collect()
    }

    /// The scanner before it copied runs of the source (the reference the
    /// faster one must agree with).
    fn ref_scan(sql: &str, lit_base: usize, scs: bool) -> Scan {
        let mut s = RefScanner::new(Scan::default(), 0, lit_base);
        for t in Lexer::with_scs(sql, scs) {
            s.push(sql, t, scs);
        }
        s.sc
    }

    fn ref_push_decimal(out: &mut String, mut n: usize) {
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

    fn ref_liftable(sql: &str, prev: Option<Token>) -> bool {
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

    /// The state of scanning one statement, token by token.
    struct RefScanner {
        sc: Scan,
        prev: Option<Token>,
        pending_space: bool,
        /// Where the statement starts in the text: lifted literals' ranges
        /// are relative to it.
        base: usize,
        lit_base: usize,
    }

    impl RefScanner {
        /// A scanner filling `sc` (its buffers are cleared, their capacity kept).
        fn new(sc: Scan, base: usize, lit_base: usize) -> RefScanner {
            let mut s = RefScanner {
                sc,
                prev: None,
                pending_space: false,
                base,
                lit_base,
            };
            s.restart(base);
            s
        }

        /// Starts the next statement, at `base`, in the same buffers.
        fn restart(&mut self, base: usize) {
            self.sc.reset();
            self.prev = None;
            self.pending_space = false;
            self.base = base;
        }

        /// Takes the next token of the statement (`sql` is the whole text).
        fn push(&mut self, sql: &str, t: Token, scs: bool) {
            let text = &sql[t.start..t.end];
            match t.kind {
                Tok::Space => {
                    self.pending_space = true;
                    return;
                }
                Tok::Comment => {
                    if is_hint(text) {
                        self.sc.hint = true;
                    }
                    if text.starts_with("/*") && !(text.len() >= 4 && text.ends_with("*/")) {
                        self.sc.undecidable = Some("unterminated comment");
                    }
                    self.pending_space = true;
                    return;
                }
                _ => {}
            }
            if self.pending_space && !self.sc.shape.is_empty() {
                self.sc.shape.push(' ');
            }
            self.pending_space = false;
            // The text the parser sees for this token: with
            // standard_conforming_strings off a plain string with a backslash
            // is written as the E'' string PostgreSQL reads it as.
            let as_parsed: std::borrow::Cow<'_, str> = match t.kind {
                Tok::String => {
                    let b = text.as_bytes();
                    if !text.ends_with('\'') || text.len() < 2 {
                        self.sc.undecidable = Some("unterminated string");
                    }
                    if matches!(b[0], b'u' | b'U') {
                        // U&'…' (with UESCAPE): PostgreSQL refuses it when
                        // standard_conforming_strings is off; its escapes
                        // are never decoded here.
                        if !scs {
                            self.sc.undecidable =
                                Some("U& string with standard_conforming_strings off");
                        }
                        text.into()
                    } else if !scs && text.contains('\\') && b[0] == b'\'' {
                        format!("E{text}").into()
                    } else if !scs && text.contains('\\') && matches!(b[0], b'n' | b'N') {
                        format!("E{}", &text[1..]).into()
                    } else {
                        text.into()
                    }
                }
                Tok::QuotedIdent => {
                    if !text.ends_with('"')
                        || text.len() < 2
                        || (text.len() < 4 && text.starts_with(['u', 'U']))
                    {
                        self.sc.undecidable = Some("unterminated quoted identifier");
                    }
                    text.into()
                }
                Tok::DollarString => {
                    let tag_len = text[1..].find('$').map_or(text.len(), |i| i + 2);
                    if text.len() < 2 * tag_len || !text.ends_with(&text[..tag_len]) {
                        self.sc.undecidable = Some("unterminated dollar-quoted string");
                    }
                    text.into()
                }
                _ => text.into(),
            };
            match t.kind {
                Tok::String | Tok::Number if ref_liftable(sql, self.prev) => {
                    let slot = self.lit_base + self.sc.lits.len();
                    self.sc.lits.push(t.start - self.base..t.end - self.base);
                    self.sc.shape.push('$');
                    ref_push_decimal(&mut self.sc.shape, LIFT_BASE as usize + slot);
                }
                Tok::Param => {
                    let n = text[1..].parse::<u32>().unwrap_or(u32::MAX);
                    if n >= REGION_MARK {
                        self.sc.huge_param = true;
                    }
                    self.sc.max_param = self.sc.max_param.max(n);
                    self.sc.shape.push_str(text);
                }
                Tok::Word => {
                    if text.eq_ignore_ascii_case("and") || text.eq_ignore_ascii_case("or") {
                        self.sc.operators += 1;
                    }
                    self.sc.shape.push_str(text);
                }
                Tok::Punct => {
                    if text != "," && text != "." {
                        self.sc.operators += 1;
                    }
                    self.sc.shape.push_str(text);
                }
                _ => self.sc.shape.push_str(&as_parsed),
            }
            self.prev = Some(t);
        }
    }

    /// Texts made of fragments that exercise every branch of the scanner
    /// (a small deterministic generator: no new dependency).
    fn generated_texts(n: usize) -> Vec<String> {
        const FRAGS: &[&str] = &[
            "SELECT",
            "select",
            "from",
            "users",
            "WHERE",
            "where",
            "and",
            "AND",
            "or",
            "Or",
            "not",
            "limit",
            "LIMIT",
            "offset",
            "values",
            "VALUES",
            "returning",
            "between",
            "then",
            "else",
            "when",
            "like",
            "ILIKE",
            "in",
            "id",
            "x",
            "é",
            "名前",
            "t$x",
            " ",
            " ",
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\u{c}",
            "'eu'",
            "'a''b'",
            "''",
            "E'x\\'y'",
            "e'\\n'",
            "'x\\'",
            "'x\\'y'",
            "N'a\\b'",
            "n'q'",
            "b'01'",
            "X'ff'",
            "U&'x'",
            "u&'\\0061'",
            "U&\"x\"",
            "u&\"",
            "\"id\"",
            "\"a\"\"b\"",
            "\"unterm",
            "'unterm",
            "$$a;b$$",
            "$t$x$t$",
            "$t$x",
            "$",
            "$$",
            "$1",
            "$12",
            "$99999",
            "$100000",
            "$4294967296",
            "42",
            "1.5e3",
            ".5",
            "1_000",
            "7e",
            "--c\n",
            "--c\r",
            "-- c",
            "/* c */",
            "/* a /* b */ c */",
            "/*+ geogate:allow_scatter */",
            "/*+geogate:allow_scatter*/",
            "/* unterminated",
            "(",
            ")",
            ";",
            ",",
            ".",
            "::",
            "=",
            "<>",
            "-",
            "+",
            "*",
            "@",
            "[",
            "]",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..n)
            .map(|_| {
                let len = (next() % 24) as usize;
                let mut s = String::new();
                for _ in 0..len {
                    s.push_str(FRAGS[(next() % FRAGS.len() as u64) as usize]);
                    // Mostly separated by one space, as real statements are.
                    if next() % 3 != 0 {
                        s.push(' ');
                    }
                }
                s
            })
            .collect()
    }

    fn same_scan(a: &Scan, b: &Scan, what: &str) {
        assert_eq!(a.shape, b.shape, "{what}");
        assert_eq!(a.lits, b.lits, "{what}");
        assert_eq!(
            (
                a.hint,
                a.operators,
                a.max_param,
                a.huge_param,
                a.undecidable
            ),
            (
                b.hint,
                b.operators,
                b.max_param,
                b.huge_param,
                b.undecidable
            ),
            "{what}"
        );
    }

    /// The scanner that copies runs of the source gives what the token by
    /// token one gave, on hand-picked and generated texts.
    #[test]
    fn scan_matches_the_token_by_token_reference() {
        let mut texts: Vec<String> = [
            "SELECT count(*) FROM users WHERE region = 'eu' AND tenant_id = 123;",
            "  SELECT  email FROM users\n WHERE region='eu' AND tenant_id = 123 ORDER BY id LIMIT 5",
            "/* c */ UPDATE tenants SET name = name WHERE region = 'eu' AND id = 123 -- x",
            "select E'a\\';b', 'c\\'' , N'd\\e', n'f', 'g'",
            "select U&'x' UESCAPE '!' from t where a = U&\"b\"",
            "select $a$ x ; $a$ , $$y$$ where a = $1 and b=$100000 and c = $99999",
            "SELECT 1 --x\rOR true",
            "select 'unterminated",
            "select ((1); select 2",
            "select * from t where a in (1,2,3) and b between 4 and 5 limit 6 offset 7",
            "insert into t values (1, 'b', 2.5, .5, 1e3) returning id",
            "select a.b::int, -1, +2, 3 - 4 from \"T\" where é = 'ü' and 名前 = '値'",
            "select 1 ; ; select 2",
            "",
            "   ",
            "-- only a comment",
            "/*+ geogate:allow_scatter */ select 1",
            "select 1 /* unterminated",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        texts.extend(generated_texts(4000));
        for sql in &texts {
            for scs in [true, false] {
                for lit_base in [0, 5, 20] {
                    let what = format!("{sql:?} scs={scs} lit_base={lit_base}");
                    same_scan(
                        &scan(sql, lit_base, scs),
                        &ref_scan(sql, lit_base, scs),
                        &what,
                    );
                }
                let mut one_pass = Vec::new();
                scan_statements(sql, scs, |r, sc| one_pass.push((r, sc.clone())));
                let split: Vec<_> = split_statements(sql, scs)
                    .into_iter()
                    .map(|r| (r.clone(), ref_scan(&sql[r], 0, scs)))
                    .filter(|(_, sc)| !sc.shape.is_empty())
                    .collect();
                assert_eq!(one_pass.len(), split.len(), "{sql:?} scs={scs}");
                for ((r1, a), (r2, b)) in one_pass.iter().zip(&split) {
                    assert_eq!(r1, r2, "{sql:?}");
                    same_scan(a, b, &format!("{sql:?} scs={scs}"));
                }
            }
        }
    }

    #[test]
    fn placeholders_and_lift_keywords_match_their_definitions() {
        for slot in 0..40 {
            let mut out = String::from("x");
            push_placeholder(&mut out, slot);
            assert_eq!(out, format!("x${}", LIFT_BASE as usize + slot));
        }
        for w in LIFT_AFTER_WORDS {
            assert!(lifts_after_word(w.as_bytes()), "{w}");
            assert!(lifts_after_word(w.to_uppercase().as_bytes()), "{w}");
            for other in [format!("{w}x"), w[1..].to_string()] {
                let want = LIFT_AFTER_WORDS.contains(&other.as_str());
                assert_eq!(lifts_after_word(other.as_bytes()), want, "{other}");
            }
        }
        for w in ["", "a", "an", "an d", "selects", "returnings", "é", "ÄND"] {
            assert!(!lifts_after_word(w.as_bytes()), "{w}");
        }
    }

    /// Literal values decode the same with or without the fast path for
    /// bodies that need no decoding.
    #[test]
    fn literal_values_with_and_without_escapes() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("'eu'", true, Some("eu")),
            ("'eu'", false, Some("eu")),
            ("''", true, Some("")),
            ("'a''b'", true, Some("a'b")),
            ("'a\\b'", true, Some("a\\b")),
            ("'a\\nb'", false, Some("a\nb")),
            ("E'a\\nb'", true, Some("a\nb")),
            ("N'x\\y'", false, Some("xy")),
            ("N'x\\y'", true, Some("x\\y")),
            ("'a\u{0}b'", true, None),
            ("'a'b'", true, None),
            ("'unterminated", true, None),
            ("'é名'", true, Some("é名")),
            ("42", true, Some("42")),
            ("B'01'", true, None),
        ];
        for &(tok, scs, want) in cases {
            assert_eq!(
                literal_value(tok, scs).as_deref(),
                want,
                "{tok:?} scs={scs}"
            );
        }
    }

    #[test]
    fn byte_classes_match_postgresql_identifier_rules() {
        for b in 0..=255u8 {
            let start = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
            assert_eq!(is_ident_start(b), start, "{b}");
            assert_eq!(
                is_ident_char(b),
                start || b.is_ascii_digit() || b == b'$',
                "{b}"
            );
        }
    }

    /// The one-pass scanner gives, for every statement, what splitting
    /// first and scanning each statement alone gives.
    #[test]
    fn scan_statements_matches_split_then_scan() {
        let texts = [
            "select ';'; -- a;b\n select $$x;y$$; /* c; */ select (1;2); ;  ",
            "SELECT * FROM users WHERE tenant_id = 'a' AND region = 'eu';",
            "update users set name = 'x' where id = 1; insert into t values (1, 'b');",
            "/*+ geogate:allow_scatter */ select 1; select 2 /* x */",
            "select E'a\\';b'; select 'c\\'; select 3",
            "select U&'x'; select $a$ ; $a$; select 'unterminated",
            "  ;;  ; -- only comments\n",
            "select ((1); select 2",
            "",
        ];
        for sql in texts {
            for scs in [true, false] {
                let mut one_pass = Vec::new();
                scan_statements(sql, scs, |r, sc| one_pass.push((r, sc.clone())));
                let split: Vec<_> = split_statements(sql, scs)
                    .into_iter()
                    .map(|r| (r.clone(), scan(&sql[r], 0, scs)))
                    .filter(|(_, sc)| !sc.shape.is_empty())
                    .collect();
                assert_eq!(one_pass.len(), split.len(), "{sql:?} scs={scs}");
                for ((r1, a), (r2, b)) in one_pass.iter().zip(&split) {
                    assert_eq!(r1, r2, "{sql:?}");
                    assert_eq!(a.shape, b.shape, "{sql:?}");
                    assert_eq!(a.lits, b.lits, "{sql:?}");
                    assert_eq!(
                        (
                            a.hint,
                            a.operators,
                            a.max_param,
                            a.huge_param,
                            a.undecidable
                        ),
                        (
                            b.hint,
                            b.operators,
                            b.max_param,
                            b.huge_param,
                            b.undecidable
                        ),
                        "{sql:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_ignores_semicolons_in_strings_comments_dollar_quotes_and_parens() {
        let sql = "select ';'; -- a;b\n select $$x;y$$; /* c; */ select (1;2); ;  ";
        assert_eq!(
            split(sql, true),
            vec![
                "select ';'",
                "-- a;b\n select $$x;y$$",
                "/* c; */ select (1;2)"
            ]
        );
    }

    #[test]
    fn dash_comments_end_at_carriage_return_as_in_postgres() {
        let sql = "SELECT 1 --x\r; DELETE FROM users";
        assert_eq!(split(sql, true), vec!["SELECT 1 --x", "DELETE FROM users"]);
        let sc = scan(
            "SELECT * FROM users WHERE region = 'eu' --x\rOR true",
            0,
            true,
        );
        assert!(sc.shape.ends_with("OR true"), "{}", sc.shape);
    }

    #[test]
    fn nested_block_comments_hide_semicolons() {
        let sql = "SELECT /* a /* b; */ c; */ 1; SELECT 2";
        assert_eq!(split(sql, true).len(), 2);
    }

    #[test]
    fn backslash_quotes_follow_standard_conforming_strings() {
        let sql = "SELECT 'x\\'; DELETE FROM users; SELECT ''";
        // on: the backslash is a character, the quote ends the string.
        assert_eq!(split(sql, true).len(), 3);
        // off: \' escapes the quote, everything is one string literal.
        assert_eq!(split(sql, false).len(), 1);
        assert_eq!(literal_value("'a\\'b'", false).as_deref(), Some("a'b"));
        assert_eq!(literal_value("'a\\'", true).as_deref(), Some("a\\"));
        let sc = scan(
            "SELECT * FROM users WHERE email = 'x\\' AND region = $$eu$$ AND email = ' OR true",
            0,
            false,
        );
        assert!(sc.shape.contains("OR true"), "{}", sc.shape);
        assert!(!sc.shape.contains("$$eu$$"), "{}", sc.shape);
    }

    #[test]
    fn escape_strings_decode_octal_hex_and_unicode() {
        assert_eq!(literal_value("E'\\145u'", true).as_deref(), Some("eu"));
        assert_eq!(
            literal_value("E'\\x65\\u0075'", true).as_deref(),
            Some("eu")
        );
        assert_eq!(literal_value("E'\\000'", true), None);
        assert_eq!(literal_value("U&'\\0065u'", true), None);
    }

    #[test]
    fn u_and_strings_with_scs_off_are_undecidable() {
        assert!(
            scan("SELECT U&'x' FROM users", 0, false)
                .undecidable
                .is_some()
        );
        assert!(
            scan("SELECT U&'x' FROM users", 0, true)
                .undecidable
                .is_none()
        );
        assert!(scan("SELECT 'x FROM users", 0, true).undecidable.is_some());
        assert!(
            scan("SELECT $a$ x FROM users", 0, true)
                .undecidable
                .is_some()
        );
    }

    #[test]
    fn do_bodies_are_searched_without_endless_recursion() {
        let names: std::collections::HashSet<String> = ["users".to_string()].into();
        assert!(!strings_mention_any("DO $\u{fffd} END $$", &names, true));
        assert!(!strings_mention_any("DO $$", &names, true));
        assert!(!strings_mention_any(
            "DO $\u{fffd}\u{fffd}$ x\u{fffd}",
            &names,
            true
        ));
        assert!(strings_mention_any("DO $a$ users \u{fffd}", &names, true));
        assert!(strings_mention_any(
            "DO $$ BEGIN DELETE FROM users; END $$",
            &names,
            true
        ));
        assert!(strings_mention_any(
            "DO $a$ BEGIN EXECUTE 'DELETE FROM ' || 'users'; END $a$",
            &names,
            true
        ));
        let deep = format!("DO {}", "'".repeat(4096));
        let _ = strings_mention_any(&deep, &names, true);
    }

    #[test]
    fn scan_lifts_operand_literals_but_not_typed_literals() {
        let sc = scan(
            "SELECT * FROM t WHERE a = 'x' AND d > DATE '2020-01-01' LIMIT 5",
            0,
            true,
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
            true,
        );
        let fp = fingerprint(&sc.shape);
        assert_eq!(
            fp,
            "select * from t where a in (?) and b = DATE ? and c = $1"
        );
    }

    #[test]
    fn hint_is_exactly_the_hint_comment() {
        assert!(scan("/*+ GeoGate:Allow_Scatter */ select 1", 0, true).hint);
        assert!(scan("/*+geogate:allow_scatter*/ select 1", 0, true).hint);
        assert!(!scan("select '/*+ geogate:allow_scatter */'", 0, true).hint);
        assert!(!scan("/* geogate:allow_scatter=false */ select 1", 0, true).hint);
        assert!(!scan("/*+ geogate:allow_scatter=false */ select 1", 0, true).hint);
        assert!(!scan("-- geogate:allow_scatter\nselect 1", 0, true).hint);
    }

    #[test]
    fn mentions_any_matches_words_and_quoted_identifiers_only() {
        let names: std::collections::HashSet<String> = ["users".to_string()].into();
        assert!(mentions_any("select * from public.Users", &names, true));
        assert!(mentions_any("select * from \"USERS\"", &names, true));
        assert!(mentions_any("select * from \"users\"", &names, true));
        assert!(mentions_any("select * from U&\"\\0075sers\"", &names, true));
        assert!(!mentions_any("select * from users_archive", &names, true));
        assert!(!mentions_any("select 1 -- users", &names, true));
        assert!(mentions_any("select 1 -- x\rfrom users", &names, true));
    }
}
