//! Strict JSON parsed into a tree that remembers where every value stood.
//!
//! Policy findings must name the file, the JSON path and the line and column
//! of the offending value, and IAM rejects documents that repeat a key; serde's
//! `Value` keeps neither positions nor duplicate keys. This parser is strict
//! RFC 8259 JSON (no comments, no trailing commas), keeps object members in
//! order including duplicates, and bounds nesting so hostile input cannot
//! exhaust the stack. Numbers keep their source text, because IAM treats
//! `5` and `"5"` alike and a float round trip would change them.
//!
//! The tree costs far more than the text (a node is 48 bytes, and `0,` is
//! two), so [`parse_within`] counts what it builds as it goes, one addition
//! and one comparison per value, and stops where a budget runs out rather
//! than let a small hostile file take gigabytes.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted; serde_json uses the same bound.
pub const MAX_DEPTH: usize = 128;

/// The memory budget the loader gives a JSON text: this many bytes of tree
/// per byte of text (compact IAM JSON takes 2 to 5; pretty-printed, less),
/// plus [`BUDGET_BASE`] (so small files never run short). The densest JSON,
/// `[0,0,0,...]`, would take 24.
pub const BUDGET_PER_BYTE: usize = 10;
/// See [`BUDGET_PER_BYTE`].
pub const BUDGET_BASE: usize = 1 << 20;

/// The budget for a text of `len` bytes (see [`BUDGET_PER_BYTE`]).
pub fn budget_for(len: usize) -> usize {
    len.saturating_mul(BUDGET_PER_BYTE)
        .saturating_add(BUDGET_BASE)
}

/// Texts longer than this reserve their parser's scratch space up front.
const RESERVE_ABOVE: usize = 1 << 20;

/// What [`parse_within`] counts for a value in an array (or the document).
pub const NODE_BYTES: usize = std::mem::size_of::<Node<'static>>();
/// What it counts for an object member: the key, its position and the value.
pub const MEMBER_BYTES: usize = std::mem::size_of::<Member<'static>>();

/// A position in the source text (1-based line and column, column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// A JSON value with the position of its first character. Strings without
/// escapes borrow from the source text, so parsing allocates little.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    pub value: Value<'a>,
    pub pos: Pos,
    /// Length of the value written without white space, not even inside
    /// strings (which count decoded, in characters): the measure IAM's
    /// policy size quotas use. Kept while parsing, when every byte passes
    /// by anyway, rather than by walking the tree again.
    pub compact_len: u32,
}

/// An object member; `key_pos` points at the key's opening quote.
#[derive(Debug, Clone, PartialEq)]
pub struct Member<'a> {
    pub key: Cow<'a, str>,
    pub key_pos: Pos,
    pub value: Node<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<Member<'a>>),
}

impl Value<'_> {
    /// The JSON type name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

impl<'a> Node<'a> {
    /// The first member named `key`, if this is an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match &self.value {
            Value::Object(members) => members.iter().find(|m| m.key == key).map(|m| &m.value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn members(&self) -> Option<&[Member<'a>]> {
        match &self.value {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
}

/// Why the text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {}, column {}", pos.line, pos.column)]
pub struct JsonError {
    pub message: String,
    pub pos: Pos,
    /// The JSON path of the value being read when it stopped (`$` for the
    /// document itself), rendered like [`JsonPath`].
    pub path: String,
    /// The text is JSON, but its tree would take more memory than allowed.
    pub over_budget: bool,
}

/// Parses one JSON value that makes up the whole text (surrounding white
/// space allowed), with no memory budget: for text that is already small.
pub fn parse(text: &str) -> Result<Node<'_>, JsonError> {
    parse_within(text, usize::MAX).map(|(node, _)| node)
}

/// Parses like [`parse`], but stops with an error ([`JsonError::over_budget`])
/// once the tree would take more than `budget` bytes, counted as
/// [`NODE_BYTES`] per value, [`MEMBER_BYTES`] per object member and the
/// bytes of each string that escapes made a copy of. Returns the tree and
/// the bytes counted.
pub fn parse_within(text: &str, budget: usize) -> Result<(Node<'_>, usize), JsonError> {
    let mut p = Parser {
        src: text.as_bytes(),
        text,
        i: 0,
        line: 1,
        line_start: 0,
        line_ascii: true,
        col_at: (0, 1),
        items: Vec::new(),
        members: Vec::new(),
        used: 0,
        budget,
        over_budget: false,
        err_path: Vec::new(),
    };
    if text.len() > RESERVE_ABOVE {
        // Room for as many children as the text can hold within the budget,
        // reserved up front, so the scratch lists never grow by copying
        // (which holds the old copy and the new at once). Untouched, the
        // room is address space, not memory; without it, parsing goes on.
        let items = (text.len() / 2 + 1).min(budget / NODE_BYTES);
        let members = (text.len() / 5 + 1).min(budget / MEMBER_BYTES);
        let _ = p.items.try_reserve_exact(items);
        let _ = p.members.try_reserve_exact(members);
    }
    let result = p.document();
    match result {
        Ok(node) => Ok((node, p.used)),
        Err(mut e) => {
            e.over_budget = p.over_budget;
            e.path = render_path(&p.err_path);
            Err(e)
        }
    }
}

/// A step of [`JsonError::path`], pushed as the error unwinds (innermost first).
enum ErrStep<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

fn render_path(steps: &[ErrStep<'_>]) -> String {
    use fmt::Write;
    let mut out = String::new();
    for step in steps.iter().rev() {
        // Writing to a String cannot fail.
        let _ = match step {
            ErrStep::Key(k) if out.is_empty() => write!(out, "{}", crate::finding::echo(k)),
            ErrStep::Key(k) => write!(out, ".{}", crate::finding::echo(k)),
            ErrStep::Index(i) => write!(out, "[{i}]"),
        };
    }
    if out.is_empty() {
        out.push('$');
    }
    out
}

struct Parser<'a> {
    src: &'a [u8],
    text: &'a str,
    i: usize,
    line: u32,
    line_start: usize,
    /// Everything from `line_start` to `i` is ASCII, so a column is a byte
    /// count. Only strings can hold other characters; they clear it.
    line_ascii: bool,
    /// The last computed (byte offset, column): positions are asked for in
    /// increasing order, so counting characters from there keeps a long
    /// single-line document linear.
    col_at: (usize, u32),
    /// Children of the arrays and objects being parsed; each container drains
    /// its own off the top when it closes, so its Vec is allocated once, at
    /// its final size (not `split_off`, which at 0 hands over the scratch
    /// buffer with all its spare capacity).
    items: Vec<Node<'a>>,
    members: Vec<Member<'a>>,
    /// Bytes of tree counted so far, and the most allowed.
    used: usize,
    budget: usize,
    over_budget: bool,
    /// Where the error happened, innermost step first.
    err_path: Vec<ErrStep<'a>>,
}

impl<'a> Parser<'a> {
    fn document(&mut self) -> Result<Node<'a>, JsonError> {
        self.skip_ws();
        let node = self.value(0)?;
        self.skip_ws();
        if self.i < self.src.len() {
            return Err(self.error("unexpected content after the JSON value"));
        }
        Ok(node)
    }

    /// Counts `bytes` more of tree; an error once past the budget.
    #[inline]
    fn spend(&mut self, bytes: usize) -> Result<(), JsonError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.budget {
            self.over_budget = true;
            return Err(self.error(format!(
                "the document needs more than {} bytes of memory to load; it stopped here",
                self.budget
            )));
        }
        Ok(())
    }

    fn pos(&mut self) -> Pos {
        if self.line_ascii {
            // A column only places a finding; the 64 MiB file cap keeps it exact.
            let column = u32::try_from(self.i - self.line_start + 1).unwrap_or(u32::MAX);
            self.col_at = (self.i, column);
            return Pos {
                line: self.line,
                column,
            };
        }
        let (from, col) = if self.col_at.0 >= self.line_start && self.col_at.0 <= self.i {
            self.col_at
        } else {
            (self.line_start, 1)
        };
        let chars = self.text.get(from..self.i).map_or(0, |s| {
            if s.is_ascii() {
                s.len()
            } else {
                s.chars().count()
            }
        });
        let column = col.saturating_add(u32::try_from(chars).unwrap_or(u32::MAX));
        self.col_at = (self.i, column);
        Pos {
            line: self.line,
            column,
        }
    }

    fn error(&mut self, message: impl fmt::Display) -> JsonError {
        JsonError {
            message: message.to_string(),
            pos: self.pos(),
            path: String::new(),
            over_budget: false,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b'\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.line_start = self.i;
                    self.line_ascii = true;
                }
                b' ' | b'\t' | b'\r' => self.i += 1,
                _ => break,
            }
        }
    }

    fn expect_literal(&mut self, word: &str) -> Result<(), JsonError> {
        if self.src.get(self.i..self.i + word.len()) == Some(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.spend(NODE_BYTES)?;
        let pos = self.pos();
        let (value, compact_len) = match self.peek() {
            None => return Err(self.error("unexpected end of input, expected a JSON value")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => {
                let (s, plain) = self.string()?;
                if let Cow::Owned(o) = &s {
                    self.spend(o.len())?;
                }
                let len = if plain {
                    s.len() + 2
                } else {
                    string_compact_len(&s)
                };
                (Value::String(s), len)
            }
            Some(b't') => {
                self.expect_literal("true")?;
                (Value::Bool(true), 4)
            }
            Some(b'f') => {
                self.expect_literal("false")?;
                (Value::Bool(false), 5)
            }
            Some(b'n') => {
                self.expect_literal("null")?;
                (Value::Null, 4)
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = self.number()?;
                (Value::Number(n), n.len())
            }
            Some(_) => return Err(self.error("expected a JSON value")),
        };
        Ok(Node {
            value,
            pos,
            // Store files are at most 64 MiB, so this fits; were it to
            // saturate, the size quotas would see the largest size and refuse.
            compact_len: u32::try_from(compact_len).unwrap_or(u32::MAX),
        })
    }

    fn object(&mut self, depth: usize) -> Result<(Value<'a>, usize), JsonError> {
        self.i += 1; // '{'
        let start = self.members.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok((Value::Object(Vec::new()), 2));
        }
        // `{}`, and per member a `,` or the `{`, its key, `"":` and its value.
        let mut len = 1;
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key in the object"));
            }
            let key_pos = self.pos();
            let (key, _) = self.string()?;
            let owned = match &key {
                Cow::Owned(k) => k.len(),
                Cow::Borrowed(_) => 0,
            };
            self.spend((MEMBER_BYTES - NODE_BYTES) + owned)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:` after the object key"));
            }
            self.i += 1;
            self.skip_ws();
            let value = match self.value(depth + 1) {
                Ok(v) => v,
                Err(e) => {
                    self.err_path.push(ErrStep::Key(key));
                    return Err(e);
                }
            };
            len += 1 + key.len() + 3 + value.compact_len as usize;
            self.members.push(Member {
                key,
                key_pos,
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok((Value::Object(self.members.drain(start..).collect()), len));
                }
                _ => return Err(self.error("expected `,` or `}` in the object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(Value<'a>, usize), JsonError> {
        self.i += 1; // '['
        let start = self.items.len();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok((Value::Array(Vec::new()), 2));
        }
        // `[]`, and per item a `,` or the `[` and the item.
        let mut len = 1;
        let mut index = 0;
        loop {
            self.skip_ws();
            let item = match self.value(depth + 1) {
                Ok(v) => v,
                Err(e) => {
                    self.err_path.push(ErrStep::Index(index));
                    return Err(e);
                }
            };
            index += 1;
            len += 1 + item.compact_len as usize;
            self.items.push(item);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok((Value::Array(self.items.drain(start..).collect()), len));
                }
                _ => return Err(self.error("expected `,` or `]` in the array")),
            }
        }
    }

    fn number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number: expected a digit after `.`"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number: expected a digit in the exponent"));
            }
            self.digits();
        }
        Ok(self.text.get(start..self.i).unwrap_or_default())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .text
            .get(self.i..self.i + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid `\\u` escape: expected four hex digits"))?;
        let v = u32::from_str_radix(digits, 16).map_err(|e| self.error(e))?;
        self.i += 4;
        Ok(v)
    }

    /// A string, and whether it is plain: borrowed, ASCII, without white
    /// space (its compact length is its length and the quotes).
    fn string(&mut self) -> Result<(Cow<'a, str>, bool), JsonError> {
        const CONTROL: u8 = 1;
        const WIDE: u8 = 2;
        const SPACE: u8 = 4;
        self.i += 1; // opening quote
        let start = self.i;
        // The common case: no escapes, borrow the text. memchr finds the
        // end a vector at a time; one pass over the bytes then finds
        // control bytes (an error), wide characters and spaces.
        let rest = self.src.get(start..).unwrap_or_default();
        let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let run = rest.get(..end).unwrap_or_default();
        let seen = run.iter().fold(0u8, |seen, &b| {
            seen | (u8::from(b < 0x20) * CONTROL)
                | (u8::from(b >= 0x80) * WIDE)
                | (u8::from(b == b' ') * SPACE)
        });
        self.line_ascii &= seen & WIDE == 0;
        self.i += if seen & CONTROL != 0 {
            run.iter().position(|&c| c < 0x20).unwrap_or(end)
        } else {
            end
        };
        if self.peek() == Some(b'"') {
            let s = self.text.get(start..self.i).unwrap_or_default();
            self.i += 1;
            return Ok((Cow::Borrowed(s), seen == 0));
        }
        let mut out = String::new();
        out.push_str(self.text.get(start..self.i).unwrap_or_default());
        loop {
            let run_start = self.i;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let run = self.text.get(run_start..self.i).unwrap_or_default();
            self.line_ascii &= run.is_ascii();
            out.push_str(run);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok((Cow::Owned(out), false));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let esc = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.i += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.src.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.error("unpaired surrogate in `\\u` escape"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.error("unpaired surrogate in `\\u` escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            let ch = char::from_u32(code)
                                .ok_or_else(|| self.error("invalid `\\u` escape"))?;
                            out.push(ch);
                        }
                        _ => return Err(self.error("invalid escape in string")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }
}

/// A string's [`Node::compact_len`]: its characters other than white space, and the quotes.
fn string_compact_len(s: &str) -> usize {
    // Most strings are ASCII without a space or control byte: a test the
    // compiler vectorises tells those apart from the rest.
    if s.bytes()
        .fold(0u8, |n, b| n | u8::from(b <= b' ' || b >= 0x80))
        == 0
    {
        s.len() + 2
    } else if s.is_ascii() {
        // `char::is_whitespace` on ASCII: `is_ascii_whitespace` and U+000B.
        s.bytes()
            .filter(|&b| !(b.is_ascii_whitespace() || b == 0x0b))
            .count()
            + 2
    } else {
        s.chars().filter(|c| !c.is_whitespace()).count() + 2
    }
}

/// A path into a JSON document, rendered like `Statement[2].Condition`.
///
/// A path is a chain of steps borrowed from its parent's stack frame, so
/// descending into a document costs nothing; the text is built only when a
/// finding or a location is reported.
#[derive(Debug, Clone, Copy)]
pub struct JsonPath<'p> {
    parent: Option<&'p JsonPath<'p>>,
    step: Step<'p>,
}

#[derive(Debug, Clone, Copy)]
enum Step<'p> {
    Root,
    Key(&'p str),
    Index(usize),
    /// `key[i]` in one step, for the items of an array member.
    KeyIndex(&'p str, usize),
}

impl<'p> JsonPath<'p> {
    pub fn root() -> Self {
        JsonPath {
            parent: None,
            step: Step::Root,
        }
    }

    pub fn key(&'p self, key: &'p str) -> JsonPath<'p> {
        self.child(Step::Key(key))
    }

    pub fn index(&'p self, i: usize) -> JsonPath<'p> {
        self.child(Step::Index(i))
    }

    /// The path of item `i` of the array member `key`.
    pub fn key_index(&'p self, key: &'p str, i: usize) -> JsonPath<'p> {
        self.child(Step::KeyIndex(key, i))
    }

    fn child(&'p self, step: Step<'p>) -> JsonPath<'p> {
        JsonPath {
            parent: Some(self),
            step,
        }
    }

    /// Appends this path to `out`, after whatever `out` holds (a base path).
    pub fn write_to(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(parent) = self.parent {
            parent.write_to(out);
        }
        let (key, index) = match self.step {
            Step::Root => (None, None),
            Step::Key(k) => (Some(k), None),
            Step::Index(i) => (None, Some(i)),
            Step::KeyIndex(k, i) => (Some(k), Some(i)),
        };
        if let Some(k) = key {
            if !out.is_empty() {
                out.push('.');
            }
            // Keys are input: a key cannot break the line a path is shown on.
            let _ = write!(out, "{}", crate::finding::echo(k));
        }
        if let Some(i) = index {
            // Writing to a String cannot fail.
            let _ = write!(out, "[{i}]");
        }
    }
}

impl fmt::Display for JsonPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_to(&mut out);
        f.write_str(if out.is_empty() { "$" } else { &out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_values_with_positions() {
        let n = parse("{\n  \"a\": [1, \"x\"],\n  \"b\": null}").unwrap();
        let a = n.get("a").unwrap();
        assert_eq!(a.pos.line, 2);
        assert_eq!(a.pos.column, 8);
        match &a.value {
            Value::Array(items) => {
                assert_eq!(items[0].value, Value::Number("1"));
                assert_eq!(items[1].value, Value::String("x".into()));
                assert_eq!(items[1].pos.column, 12);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(n.get("b").unwrap().value, Value::Null);
    }

    #[test]
    fn keeps_duplicate_keys() {
        let n = parse(r#"{"Effect":"Allow","Effect":"Deny"}"#).unwrap();
        assert_eq!(n.members().unwrap().len(), 2);
    }

    #[test]
    fn rejects_non_json_with_position() {
        for bad in [
            "",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "// c\n{}",
            "'a'",
            "01",
            "1.",
            "\"\\x\"",
            "{} x",
            "nul",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        let e = parse("{\n \"a\": tru }").unwrap_err();
        assert_eq!(e.pos.line, 2);
    }

    #[test]
    fn decodes_escapes_and_surrogates() {
        let n = parse(r#""a\"\\\/\n\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(n.as_str(), Some("a\"\\/\né😀"));
        assert!(parse(r#""\ud83d""#).is_err());
    }

    #[test]
    fn bounds_depth() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn a_million_levels_of_nesting_is_an_error_not_a_stack_overflow() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let deep = open.repeat(1_000_000) + &close.repeat(1_000_000);
            let e = parse(&deep).unwrap_err();
            assert!(e.message.contains("nesting deeper than 128"), "{e}");
            assert!(!e.over_budget);
        }
    }

    #[test]
    fn the_budget_counts_nodes_members_and_copied_strings() {
        let (_, used) = parse_within("[0, [], \"ab\"]", usize::MAX).unwrap();
        assert_eq!(used, 4 * NODE_BYTES);
        // A member is counted whole; an escaped string's copy by its bytes.
        let (_, used) = parse_within(r#"{"a": "x\ny", "b\u00e9": 1}"#, usize::MAX).unwrap();
        assert_eq!(used, NODE_BYTES + 2 * MEMBER_BYTES + 3 + 3);
        // Exactly the budget is enough; a byte less is not.
        assert!(parse_within("[0, [], \"ab\"]", 4 * NODE_BYTES).is_ok());
        assert!(parse_within("[0, [], \"ab\"]", 4 * NODE_BYTES - 1).is_err());
    }

    #[test]
    fn running_out_of_budget_stops_where_it_ran_out() {
        // The budget covers the object and its member `a`, and two items of `b`.
        let text = r#"{"a": 1, "b": [0, 0, 0, 0]}"#;
        let budget = NODE_BYTES + MEMBER_BYTES + MEMBER_BYTES + 2 * NODE_BYTES;
        let e = parse_within(text, budget).unwrap_err();
        assert!(e.over_budget, "{e:?}");
        assert_eq!(e.path, "b[2]");
        assert_eq!((e.pos.line, e.pos.column), (1, 22));
        assert!(e.message.contains(&budget.to_string()), "{e}");
        assert!(parse_within(text, budget + NODE_BYTES).is_err());
        assert!(parse_within(text, budget + 2 * NODE_BYTES).is_ok());
        // Syntax errors are placed the same way; keys shown escaped.
        let e = parse(r#"{"x": [{}, {"k\ny": [1, tru]}]}"#).unwrap_err();
        assert!(!e.over_budget);
        assert_eq!(e.path, r"x[1].k\ny[1]");
        assert_eq!(parse("[").unwrap_err().path, "[0]");
        assert_eq!(parse("{} x").unwrap_err().path, "$");
    }

    #[test]
    fn real_documents_fit_their_budget_with_room() {
        // Compact IAM JSON, the densest real kind: a few bytes of tree per byte.
        let doc = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-1:111122223333:function:f","Condition":{"StringEquals":{"AWS:SourceAccount":"111122223333"}}}],"Tags":[{"Key":"a","Value":"b"}]}"#;
        let (_, used) = parse_within(doc, usize::MAX).unwrap();
        assert!(
            used * 2 < doc.len() * BUDGET_PER_BYTE,
            "{used} for {}",
            doc.len()
        );
        // The densest JSON does not fit.
        let zeros = format!("[{}0]", "0,".repeat(1 << 20));
        let e = parse_within(&zeros, budget_for(zeros.len())).unwrap_err();
        assert!(e.over_budget);
    }

    #[test]
    fn paths_render_like_access_analyzer() {
        let root = JsonPath::root();
        let statement = root.key("Statement");
        let second = statement.index(2);
        assert_eq!(
            second.key("Condition").to_string(),
            "Statement[2].Condition"
        );
        assert_eq!(root.key_index("Policies", 0).to_string(), "Policies[0]");
        assert_eq!(JsonPath::root().to_string(), "$");
        let mut based = String::from("UserPolicyList[1].PolicyDocument");
        second.write_to(&mut based);
        assert_eq!(based, "UserPolicyList[1].PolicyDocument.Statement[2]");
    }

    /// IAM's measure written out as a walk over the finished tree: the
    /// parser's running count must agree with it.
    fn compact_len_by_walking(node: &Node) -> usize {
        match &node.value {
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => n.len(),
            Value::String(s) => s.chars().filter(|c| !c.is_whitespace()).count() + 2,
            Value::Array(items) => {
                2 + items.len().saturating_sub(1)
                    + items.iter().map(compact_len_by_walking).sum::<usize>()
            }
            Value::Object(members) => {
                2 + members.len().saturating_sub(1)
                    + members
                        .iter()
                        .map(|m| m.key.len() + 3 + compact_len_by_walking(&m.value))
                        .sum::<usize>()
            }
        }
    }

    #[test]
    fn compact_len_counts_what_iam_counts_at_every_node() {
        let docs = [
            "{}",
            "[]",
            "[ ]",
            "{\"a\" : [ 1 , -2.5e3 , true , false , null ] }",
            "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Sid\": \"a b\", \"Effect\": \"Allow\"}]\n}",
            r#"{"escaped": "tab\there\nline \u0020 \u00e9 \"q\" \\", "nbsp": "a\u00a0b c", "é key": "ü ö"}"#,
            r#"[[[]], [{}], {"k": {"k": ["x", [1]]}}]"#,
            "\"just a string with  spaces\"",
        ];
        fn every_node(n: &Node, check: &mut dyn FnMut(&Node)) {
            check(n);
            match &n.value {
                Value::Array(items) => items.iter().for_each(|i| every_node(i, check)),
                Value::Object(members) => members.iter().for_each(|m| every_node(&m.value, check)),
                _ => {}
            }
        }
        for doc in docs {
            let root = parse(doc).unwrap();
            every_node(&root, &mut |n| {
                assert_eq!(
                    n.compact_len as usize,
                    compact_len_by_walking(n),
                    "{doc}: {n:?}"
                );
            });
        }
        // Spot checks by hand: `{"a":[1,true]}` and `"xy"`.
        assert_eq!(parse("{ \"a\": [1, true] }").unwrap().compact_len, 14);
        assert_eq!(parse("\"x y\"").unwrap().compact_len, 4);
    }

    #[test]
    fn columns_count_characters_after_wide_ones_and_restart_per_line() {
        // `é` is two bytes, `😀` four; columns count characters, escaped or not.
        let n = parse("{\"é\": 1, \"b\": [\"\\u00e9😀\", 2],\n \"c\": 3}").unwrap();
        assert_eq!(n.get("é").unwrap().pos.column, 7);
        let b = match &n.get("b").unwrap().value {
            Value::Array(items) => items.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((b[0].pos.line, b[0].pos.column), (1, 16));
        assert_eq!((b[1].pos.line, b[1].pos.column), (1, 27));
        // A new line starts ASCII again.
        let c = n.get("c").unwrap();
        assert_eq!((c.pos.line, c.pos.column), (2, 7));
        // An error after a wide character is placed by characters too.
        let e = parse("[\"ü\", x]").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (1, 7));
    }
}
