//! Compiled string patterns: IAM wildcards (`*`, `?`) and policy variables.
//!
//! A pattern is parsed once, at load time, into literal runs, wildcards and
//! variables (`${aws:username}`, `${aws:PrincipalTag/team, 'none'}`, and the
//! escapes `${*}`, `${?}`, `${$}` that stand for the literal character). Each
//! pattern is then sent to its cheapest matcher (exact, prefix, suffix, any)
//! like globset does; only patterns with inner wildcards or variables run the
//! general matcher. Variables resolve against the request once per match. A
//! variable's value, like an escape, is always literal text: a user named
//! `a*` does not become a wildcard.
//!
//! # What one match costs
//!
//! The value comes from the request and the pattern from the store, so a
//! match must cost little more than reading both. The general matcher cuts
//! the pattern at its `*`s into chunks, each matching a fixed number of
//! characters: the first is matched at the start of the value, the last at
//! its end, and each middle one at its leftmost occurrence after the one
//! before, which is always right for `*`, so nothing is ever retried. A
//! middle chunk of literal text (and variables) is found with
//! `memchr::memmem`, or with Knuth-Morris-Pratt over case-folded characters
//! when ignoring case. A middle chunk with `?` is tried at each start if it
//! has at most 64 characters, and otherwise found with Shift-And, a
//! bit-parallel scan that carries one bit per chunk character. With `p` the
//! pattern's length (variables resolved) and `v` the value's:
//!
//! - patterns without `?` (nearly all: literals, `*`, variables) cost
//!   O(p + v), each chunk's search starting where the last one ended;
//! - patterns with `?` cost O(p + v × ⌈p / 64⌉): at most 64 comparisons per
//!   value character for a short chunk, one word of Shift-And state per 64
//!   characters of a long one.
//!
//! The request limits (`server::convert`) bound `v` and the store bounds
//! `p`, so that is all a request can make a match do. The per-character
//! backtracking matcher this replaced spent O(p × v) on `*` alone: about
//! six million steps, over 30 ms, for a 1,900-byte near miss behind `*`
//! against a 4,000-byte value, so seconds for a decision over 64 such
//! values; this one takes some 6,000 steps, about 10 µs
//! (`benches/pattern.rs` measures both).
//!
//! Matching does not allocate, except where a variable sits next to literal
//! text in a middle chunk (the run is joined so the search stays one pass),
//! and for the tables of a middle chunk longer than 64 characters that has
//! `?` or is matched ignoring case.

use std::fmt;

/// Supplies the value of a single-valued request key for a policy variable.
pub trait VarSource {
    /// The value of `key` (matched case-insensitively), or `None` when the
    /// key is absent or has several values (multivalued keys cannot be
    /// variables).
    fn var(&self, key: &str) -> Option<&str>;
}

/// A source with no values: every variable is unresolved.
pub struct NoVars;

impl VarSource for NoVars {
    fn var(&self, _key: &str) -> Option<&str> {
        None
    }
}

/// A policy variable reference `${key}` or `${key, 'default'}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The key as written (names are case-insensitive).
    pub key: Box<str>,
    pub default: Option<Box<str>>,
}

impl Variable {
    fn resolve<'v>(&'v self, vars: &'v dyn VarSource) -> Option<&'v str> {
        vars.var(&self.key).or(self.default.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(Box<str>),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
    /// A variable and its slot: its place among the pattern's variables,
    /// where a match keeps the value it resolved to.
    Var(Variable, u32),
}

/// How a pattern's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// `*` and `?` are wildcards (Resource, Action, StringLike, ArnLike).
    pub wildcards: bool,
    /// `${...}` is a variable (policy Version 2012-10-17 only).
    pub variables: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("unterminated policy variable in `{0}`: `${{` without a closing `}}`")]
    Unterminated(String),
    #[error("empty policy variable `${{}}` in `{0}`")]
    EmptyVariable(String),
    #[error("bad default value in policy variable `{0}`: write `${{key, 'default'}}`")]
    BadDefault(String),
}

/// The cheapest way to match, chosen at compile time. Literal forms keep
/// only the literal text, so a typical pattern costs one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Any,
    Exact,
    Prefix,
    Suffix,
    General(Box<General>),
}

/// A pattern with inner wildcards or variables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct General {
    source: Box<str>,
    segments: Box<[Segment]>,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The literal (Exact), the prefix or suffix without its `*`; empty otherwise.
    text: Box<str>,
    kind: Kind,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source())
    }
}

impl Pattern {
    pub fn parse(source: &str, syntax: Syntax) -> Result<Self, PatternError> {
        // Most patterns are plain text, or text and one trailing `*`: skip
        // the general parser for them (it matters when loading large stores).
        let special = |c: u8| c == b'$' || (syntax.wildcards && (c == b'*' || c == b'?'));
        let plain = |s: &str| !s.bytes().any(special);
        if plain(source) {
            return Ok(Pattern {
                text: source.into(),
                kind: Kind::Exact,
            });
        }
        if syntax.wildcards {
            if source == "*" {
                return Ok(Pattern {
                    text: Box::from(""),
                    kind: Kind::Any,
                });
            }
            if let Some(prefix) = source.strip_suffix('*').filter(|p| plain(p)) {
                return Ok(Pattern {
                    text: prefix.into(),
                    kind: Kind::Prefix,
                });
            }
        }
        let segments = parse_segments(source, syntax)?;
        Ok(Self::from_segments(source, segments))
    }

    /// A pattern that matches exactly `s`.
    pub fn literal(s: &str) -> Self {
        Pattern {
            text: s.into(),
            kind: Kind::Exact,
        }
    }

    fn from_segments(source: &str, mut segments: Vec<Segment>) -> Self {
        // Merge adjacent literals (escapes split them) and collapse `**`.
        let mut merged: Vec<Segment> = Vec::with_capacity(segments.len());
        for seg in segments.drain(..) {
            match (merged.last_mut(), seg) {
                (Some(Segment::Lit(a)), Segment::Lit(b)) => *a = format!("{a}{b}").into(),
                (Some(Segment::Star), Segment::Star) => {}
                (_, Segment::Lit(b)) if b.is_empty() => {}
                (_, seg) => merged.push(seg),
            }
        }
        let (text, kind) = match merged.as_mut_slice() {
            [] => (Box::from(""), Kind::Exact),
            [Segment::Star] => (Box::from(""), Kind::Any),
            [Segment::Lit(s)] => (std::mem::take(s), Kind::Exact),
            [Segment::Lit(s), Segment::Star] => (std::mem::take(s), Kind::Prefix),
            [Segment::Star, Segment::Lit(s)] => (std::mem::take(s), Kind::Suffix),
            _ => (
                Box::from(""),
                Kind::General(Box::new(General {
                    source: source.into(),
                    segments: merged.into_boxed_slice(),
                })),
            ),
        };
        Pattern { text, kind }
    }

    /// The text the pattern was written as (escapes shown resolved).
    pub fn source(&self) -> std::borrow::Cow<'_, str> {
        match &self.kind {
            Kind::Any => "*".into(),
            Kind::Exact => self.text.as_ref().into(),
            Kind::Prefix => format!("{}*", self.text).into(),
            Kind::Suffix => format!("*{}", self.text).into(),
            Kind::General(g) => g.source.as_ref().into(),
        }
    }

    /// True when the pattern is `*` alone.
    pub fn is_any(&self) -> bool {
        self.kind == Kind::Any
    }

    /// The literal this pattern matches, if it has no wildcard or variable.
    pub fn as_literal(&self) -> Option<&str> {
        match &self.kind {
            Kind::Exact => Some(&self.text),
            _ => None,
        }
    }

    fn segments(&self) -> &[Segment] {
        match &self.kind {
            Kind::General(g) => &g.segments,
            _ => &[],
        }
    }

    pub fn has_variables(&self) -> bool {
        self.segments()
            .iter()
            .any(|s| matches!(s, Segment::Var(..)))
    }

    pub fn has_wildcards(&self) -> bool {
        match &self.kind {
            Kind::Exact => false,
            Kind::Any | Kind::Prefix | Kind::Suffix => true,
            Kind::General(g) => g
                .segments
                .iter()
                .any(|s| matches!(s, Segment::Star | Segment::One)),
        }
    }

    /// The variables this pattern refers to.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.segments().iter().filter_map(|s| match s {
            Segment::Var(v, _) => Some(v),
            _ => None,
        })
    }

    /// Case-sensitive match.
    pub fn matches(&self, text: &str, vars: &dyn VarSource) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => self.text.as_ref() == text,
            Kind::Prefix => text.starts_with(self.text.as_ref()),
            Kind::Suffix => text.ends_with(self.text.as_ref()),
            Kind::General(g) => glob(&g.segments, text, vars, false),
        }
    }

    /// Match ignoring case (Unicode lower-case mapping). Exact, prefix and
    /// suffix patterns compare the lower-cased strings; the general matcher
    /// compares character by character (see `char_eq`).
    pub fn matches_ignore_case(&self, text: &str, vars: &dyn VarSource) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => eq_ignore_case(&self.text, text),
            Kind::Prefix => starts_with_folded(
                text.chars().flat_map(char::to_lowercase),
                self.text.chars().flat_map(char::to_lowercase),
            ),
            // Ends-with is starts-with on both strings reversed.
            Kind::Suffix => starts_with_folded(
                text.chars().rev().flat_map(|c| c.to_lowercase().rev()),
                self.text.chars().rev().flat_map(|c| c.to_lowercase().rev()),
            ),
            Kind::General(g) => glob(&g.segments, text, vars, true),
        }
    }
}

/// Does the lower-cased `text` start with the lower-cased `prefix`? Both
/// come as character streams, so nothing is allocated.
fn starts_with_folded(
    mut text: impl Iterator<Item = char>,
    mut prefix: impl Iterator<Item = char>,
) -> bool {
    prefix.all(|c| text.next() == Some(c))
}

/// Unicode case-insensitive equality without allocating.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
        || a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
}

fn parse_segments(source: &str, syntax: Syntax) -> Result<Vec<Segment>, PatternError> {
    let mut segments = Vec::new();
    let mut lit = String::new();
    // Slots number the variables in order; merging and splitting an ARN
    // into components keep the order, and an ARN's variables are all in its
    // last component.
    let mut slot = 0;
    let mut rest = source;
    while let Some(c) = rest.chars().next() {
        if syntax.variables && rest.starts_with("${") {
            let close = rest
                .find('}')
                .ok_or_else(|| PatternError::Unterminated(source.to_owned()))?;
            let inner = rest.get(2..close).unwrap_or_default();
            rest = rest.get(close + 1..).unwrap_or_default();
            match inner {
                "*" | "?" | "$" => lit.push_str(inner),
                _ => {
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit).into()));
                    }
                    segments.push(Segment::Var(parse_variable(inner, source)?, slot));
                    slot += 1;
                }
            }
            continue;
        }
        rest = rest.get(c.len_utf8()..).unwrap_or_default();
        match c {
            '*' | '?' if syntax.wildcards => {
                if !lit.is_empty() {
                    segments.push(Segment::Lit(std::mem::take(&mut lit).into()));
                }
                segments.push(if c == '*' {
                    Segment::Star
                } else {
                    Segment::One
                });
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        segments.push(Segment::Lit(lit.into()));
    }
    Ok(segments)
}

fn parse_variable(inner: &str, source: &str) -> Result<Variable, PatternError> {
    let (key, default) = match inner.split_once(',') {
        None => (inner.trim(), None),
        Some((key, default)) => {
            let d = default.trim();
            let d = d
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .ok_or_else(|| PatternError::BadDefault(format!("${{{inner}}}")))?;
            (key.trim(), Some(d.into()))
        }
    };
    if key.is_empty() {
        return Err(PatternError::EmptyVariable(source.to_owned()));
    }
    Ok(Variable {
        key: key.into(),
        default,
    })
}

/// Variable values, resolved once per match (index = a variable's slot).
/// Slots past the end are resolved again at each use: correct, only slower.
const MAX_RESOLVED: usize = 16;

/// One step of a chunk, with its variable resolved.
#[derive(Clone, Copy)]
enum Item<'a> {
    /// Literal text (a literal run, an escape or a variable's value).
    Text(&'a str),
    /// `?`: exactly one character.
    One,
}

/// The values of a pattern's variables for one match.
struct Resolved<'a> {
    values: [&'a str; MAX_RESOLVED],
    vars: &'a dyn VarSource,
}

impl<'a> Resolved<'a> {
    /// `None` when a variable has no value: the pattern then matches nothing.
    fn new(segments: &'a [Segment], vars: &'a dyn VarSource) -> Option<Self> {
        let mut values = [""; MAX_RESOLVED];
        work(segments.len());
        for seg in segments {
            if let Segment::Var(v, slot) = seg {
                let value = v.resolve(vars)?;
                if let Some(s) = values.get_mut(*slot as usize) {
                    *s = value;
                }
            }
        }
        Some(Resolved { values, vars })
    }

    /// A segment of a chunk as an item (`None` for `*`, which chunks never hold).
    fn item(&self, seg: &'a Segment) -> Option<Item<'a>> {
        match seg {
            Segment::Lit(s) => Some(Item::Text(s)),
            Segment::One => Some(Item::One),
            Segment::Var(v, slot) => match self.values.get(*slot as usize) {
                Some(s) => Some(Item::Text(s)),
                None => v.resolve(self.vars).map(Item::Text),
            },
            Segment::Star => None,
        }
    }
}

/// Work the general matcher does, in bytes or characters compared, searched
/// or stepped over; tests add it up to bound it by the pattern and value
/// lengths (a regression test by work done, not by time).
#[cfg(test)]
fn work(n: usize) {
    tests::WORK.with(|w| w.set(w.get() + n));
}

#[cfg(not(test))]
#[inline(always)]
fn work(_: usize) {}

/// The key two characters share when they are equal ignoring case: the
/// lower-case mapping when it is one character, else the character itself.
/// Only `İ` lower-cases to two characters (`i` and a combining dot), and no
/// other character to the same two, so equal keys mean equal lower-case
/// mappings (`tests::fold_key_is_lowercase_equality` checks every `char`).
fn fold_key(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Character equality, optionally ignoring case: the general matcher folds
/// one character at a time (so `?` and a literal always stand for exactly
/// one character of the value).
fn char_eq(a: char, b: char, fold: bool) -> bool {
    a == b || fold && fold_key(a) == fold_key(b)
}

/// The general matcher. The `*`s cut the pattern into chunks (`segments`
/// split at `Star`); every chunk matches a fixed number of characters. The
/// first chunk must match at the start of `text`, the last at its end, and
/// the ones between in order: each is taken at its leftmost match after the
/// previous one, which never loses a match (a later occurrence ends later
/// and leaves the chunks after it less room), so nothing is retried.
fn glob(segments: &[Segment], text: &str, vars: &dyn VarSource, fold: bool) -> bool {
    glob_inner(segments, text, vars, fold).is_some()
}

fn glob_inner(segments: &[Segment], text: &str, vars: &dyn VarSource, fold: bool) -> Option<()> {
    let r = Resolved::new(segments, vars)?;
    let mut chunks = segments.split(|s| matches!(s, Segment::Star));
    let first = chunks.next()?;
    let start = match_at(first, &r, text, 0, fold)?;
    let Some(last) = chunks.next_back() else {
        // No `*`: the one chunk is the whole value.
        return (start == text.len()).then_some(());
    };
    let end = match_back(last, &r, text, text.len(), fold)?;
    if end < start {
        return None;
    }
    // The middle chunks must fit between the first and the last.
    let text = text.get(..end)?;
    let mut pos = start;
    for chunk in chunks {
        pos = find(chunk, &r, text, pos, fold)?;
    }
    Some(())
}

/// Matches `chunk` at byte `at` of `text`, returning where the match ends.
fn match_at(
    chunk: &[Segment],
    r: &Resolved,
    text: &str,
    mut at: usize,
    fold: bool,
) -> Option<usize> {
    for seg in chunk {
        let rest = text.get(at..)?;
        at += match r.item(seg)? {
            Item::One => {
                work(1);
                rest.chars().next()?.len_utf8()
            }
            Item::Text(s) if !fold => {
                work(s.len());
                rest.as_bytes()
                    .starts_with(s.as_bytes())
                    .then_some(s.len())?
            }
            Item::Text(s) => {
                let mut chars = rest.chars();
                for pc in s.chars() {
                    work(1);
                    if !char_eq(pc, chars.next()?, true) {
                        return None;
                    }
                }
                rest.len() - chars.as_str().len()
            }
        };
    }
    Some(at)
}

/// Matches `chunk` so that it ends at byte `end` of `text`, returning where
/// the match starts.
fn match_back(
    chunk: &[Segment],
    r: &Resolved,
    text: &str,
    mut end: usize,
    fold: bool,
) -> Option<usize> {
    for seg in chunk.iter().rev() {
        let head = text.get(..end)?;
        end -= match r.item(seg)? {
            Item::One => {
                work(1);
                head.chars().next_back()?.len_utf8()
            }
            Item::Text(s) if !fold => {
                work(s.len());
                head.as_bytes().ends_with(s.as_bytes()).then_some(s.len())?
            }
            Item::Text(s) => {
                let mut chars = head.chars();
                for pc in s.chars().rev() {
                    work(1);
                    if !char_eq(pc, chars.next_back()?, true) {
                        return None;
                    }
                }
                head.len() - chars.as_str().len()
            }
        };
    }
    Some(end)
}

/// The leftmost match of `chunk` that starts at or after byte `from` and
/// ends within `text`; returns where it ends. A chunk matches a fixed number
/// of characters, so the match that starts first also ends first.
fn find(chunk: &[Segment], r: &Resolved, text: &str, from: usize, fold: bool) -> Option<usize> {
    if chunk.iter().any(|s| matches!(s, Segment::One)) {
        return find_wild(chunk, r, text, from, fold);
    }
    if fold {
        return find_folded(chunk, r, text, from);
    }
    // A variable next to literal text: join them, so that the search stays
    // one linear pass (the only allocation, and only with variables).
    let joined: String;
    let needle = match single_text(chunk, r) {
        Some(s) => s,
        None => {
            joined = chunk
                .iter()
                .filter_map(|seg| match r.item(seg) {
                    Some(Item::Text(s)) => Some(s),
                    _ => None,
                })
                .collect();
            &joined
        }
    };
    let hay = text.as_bytes().get(from..)?;
    let q = memchr::memmem::find(hay, needle.as_bytes());
    work(q.map_or(hay.len(), |q| q + needle.len()) + needle.len());
    q.map(|q| from + q + needle.len())
}

/// The text of a chunk whose only non-empty item is one text, borrowed.
fn single_text<'a>(chunk: &'a [Segment], r: &Resolved<'a>) -> Option<&'a str> {
    let mut texts = chunk.iter().filter_map(|seg| match r.item(seg) {
        Some(Item::Text("")) => None,
        Some(Item::Text(s)) => Some(s),
        _ => None,
    });
    let first = texts.next()?;
    texts.next().is_none().then_some(first)
}

/// The characters of a chunk's texts (its `?`s left out).
fn chunk_chars<'a>(chunk: &'a [Segment], r: &'a Resolved<'a>) -> impl Iterator<Item = char> + 'a {
    chunk
        .iter()
        .filter_map(|seg| match r.item(seg) {
            Some(Item::Text(s)) => Some(s.chars()),
            _ => None,
        })
        .flatten()
}

/// The chunk characters one word of Shift-And state covers; also the longest
/// chunk that is searched by trying it at each start, and the longest whose
/// case-folded search table stays on the stack.
const BLOCK: usize = 64;

/// `find` for a literal chunk, ignoring case: memmem compares bytes, so this
/// is Knuth-Morris-Pratt over case-folded characters, linear in the text.
fn find_folded(chunk: &[Segment], r: &Resolved, text: &str, from: usize) -> Option<usize> {
    let m = chunk_chars(chunk, r).count();
    if m == 0 {
        return Some(from);
    }
    let mut stack_keys = ['\0'; BLOCK];
    let mut stack_fail = [0usize; BLOCK];
    let (mut heap_keys, mut heap_fail) = (Vec::new(), Vec::new());
    let (keys, fail) = if m <= BLOCK {
        (stack_keys.get_mut(..m)?, stack_fail.get_mut(..m)?)
    } else {
        heap_keys.resize(m, '\0');
        heap_fail.resize(m, 0);
        (&mut heap_keys[..], &mut heap_fail[..])
    };
    for (k, c) in keys.iter_mut().zip(chunk_chars(chunk, r)) {
        *k = fold_key(c);
    }
    // fail[i]: the length of the longest proper prefix of keys[..=i] that
    // is also a suffix of it, where a partial match resumes.
    work(2 * m);
    let mut k = 0;
    for i in 1..m {
        let key = keys.get(i)?;
        while k > 0 && keys.get(k)? != key {
            k = *fail.get(k - 1)?;
        }
        if keys.get(k)? == key {
            k += 1;
        }
        *fail.get_mut(i)? = k;
    }
    let mut matched = 0;
    for (i, c) in text.get(from..)?.char_indices() {
        let key = fold_key(c);
        work(1);
        while matched > 0 && *keys.get(matched)? != key {
            work(1);
            matched = *fail.get(matched - 1)?;
        }
        if *keys.get(matched)? == key {
            matched += 1;
        }
        if matched == m {
            return Some(from + i + c.len_utf8());
        }
    }
    None
}

/// `find` for a chunk with `?` of at most 64 characters: try it at each
/// start, skipping with memchr to the first byte of its literal head when
/// it has one. A start costs at most 64 comparisons, so this stays linear in
/// the text, and for the short chunks and values policies hold it is
/// cheaper than building Shift-And's tables.
fn find_short(
    chunk: &[Segment],
    r: &Resolved,
    text: &str,
    from: usize,
    fold: bool,
) -> Option<usize> {
    let head = match chunk.first().and_then(|seg| r.item(seg)) {
        Some(Item::Text(s)) if !fold => s.as_bytes().first().copied(),
        _ => None,
    };
    let bytes = text.as_bytes();
    let mut start = from;
    loop {
        if let Some(b) = head {
            // A literal's first byte starts a character, so this lands on one.
            let rest = bytes.get(start..)?;
            let skip = memchr::memchr(b, rest);
            work(skip.map_or(rest.len(), |n| n + 1));
            start += skip?;
        }
        if let Some(end) = match_at(chunk, r, text, start, fold) {
            return Some(end);
        }
        start += text.get(start..)?.chars().next()?.len_utf8();
    }
}

/// The tables of a Shift-And search, one block per 64 chunk positions.
struct ShiftAnd<'t> {
    /// Per block, per ASCII key: the positions that accept it.
    ascii: &'t mut [u64],
    /// Per block, `BLOCK` slots of (key, positions) for other keys, sorted
    /// by key in the first `wide_len[block]` slots.
    wide: &'t mut [(char, u64)],
    wide_len: &'t mut [usize],
    /// Per block: the `?` positions, which accept any character.
    any: &'t mut [u64],
    /// Per block: bit i is set when positions ..=i match the text just read.
    state: &'t mut [u64],
}

impl ShiftAnd<'_> {
    /// The positions of block `b` that accept `key`.
    fn mask(&self, b: usize, key: char) -> u64 {
        let any = self.any.get(b).copied().unwrap_or(0);
        if key.is_ascii() {
            return any | self.ascii.get(b * 128 + key as usize).copied().unwrap_or(0);
        }
        let len = self.wide_len.get(b).copied().unwrap_or(0);
        let wide = self
            .wide
            .get(b * BLOCK..b * BLOCK + len)
            .unwrap_or_default();
        match wide.binary_search_by_key(&key, |e| e.0) {
            Ok(j) => any | wide.get(j).map_or(0, |e| e.1),
            Err(_) => any,
        }
    }

    /// Marks position `i` as accepting `key`.
    fn accept(&mut self, i: usize, key: char) -> Option<()> {
        let (b, bit) = (i / BLOCK, 1u64 << (i % BLOCK));
        if key.is_ascii() {
            *self.ascii.get_mut(b * 128 + key as usize)? |= bit;
            return Some(());
        }
        let len = self.wide_len.get_mut(b)?;
        let wide = self.wide.get_mut(b * BLOCK..b * BLOCK + BLOCK)?;
        match wide.get_mut(..*len)?.iter_mut().find(|e| e.0 == key) {
            Some(e) => e.1 |= bit,
            None => {
                *wide.get_mut(*len)? = (key, bit);
                *len += 1;
            }
        }
        Some(())
    }
}

/// `find` for a chunk with `?`. A chunk of more than 64 characters is
/// searched with Shift-And (Baeza-Yates and Gonnet), one pass over the text
/// that keeps, for every position of the chunk, whether the chunk up to it
/// matches the text just read; a `?` accepts any character. Each character
/// costs one shift and mask per 64 positions of the chunk (fewer while only
/// a prefix of it can match), whatever the text holds. Its tables are
/// allocated: such chunks are rare, and only a store's author writes them.
fn find_wild(
    chunk: &[Segment],
    r: &Resolved,
    text: &str,
    from: usize,
    fold: bool,
) -> Option<usize> {
    let m = chunk.iter().try_fold(0, |n, seg| match r.item(seg)? {
        Item::Text(s) => Some(n + s.chars().count()),
        Item::One => Some(n + 1),
    })?;
    if m == 0 {
        return Some(from);
    }
    if m <= BLOCK {
        return find_short(chunk, r, text, from, fold);
    }
    let blocks = m.div_ceil(BLOCK);
    let mut ascii = vec![0; blocks * 128];
    let mut wide = vec![('\0', 0); blocks * BLOCK];
    let (mut wide_len, mut any, mut state) = (vec![0; blocks], vec![0; blocks], vec![0; blocks]);
    let mut t = ShiftAnd {
        ascii: &mut ascii,
        wide: &mut wide,
        wide_len: &mut wide_len,
        any: &mut any,
        state: &mut state,
    };
    work(m);
    let mut i = 0;
    for seg in chunk {
        match r.item(seg)? {
            Item::One => *t.any.get_mut(i / BLOCK)? |= 1u64 << (i % BLOCK),
            Item::Text(s) => {
                for c in s.chars() {
                    t.accept(i, if fold { fold_key(c) } else { c })?;
                    i += 1;
                }
                continue;
            }
        }
        i += 1;
    }
    for b in 0..blocks {
        let len = t.wide_len.get(b).copied().unwrap_or(0);
        t.wide
            .get_mut(b * BLOCK..b * BLOCK + len)?
            .sort_unstable_by_key(|e| e.0);
    }
    let last = (m - 1) / BLOCK;
    let done = 1u64 << ((m - 1) % BLOCK);
    // Blocks from `live` on are all zero: a block starts to fill only from
    // the carry of the one before it.
    let mut live = 0;
    for (at, c) in text.get(from..)?.char_indices() {
        let key = if fold { fold_key(c) } else { c };
        let upto = (live + 1).min(blocks);
        work(upto);
        // Bit 0 takes a carry of 1: a match may start at every character.
        let mut carry = 1;
        live = 0;
        for b in 0..upto {
            let mask = t.mask(b, key);
            let state = t.state.get_mut(b)?;
            let next = ((*state << 1) | carry) & mask;
            carry = *state >> 63;
            *state = next;
            if next != 0 {
                live = b + 1;
            }
        }
        if t.state.get(last)? & done != 0 {
            return Some(from + at + c.len_utf8());
        }
    }
    None
}

/// An ARN pattern as used by `Resource` and the `Arn*` condition operators:
/// the six components are matched separately, so a wildcard in the region
/// never swallows the account; the resource component (everything after the
/// fifth colon) may match across colons, as `function:f*` matches
/// `function:f:prod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnPattern {
    /// The exact ARN, the prefix (without its `*`), or the source of a component pattern.
    text: Box<str>,
    kind: ArnKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ArnKind {
    Any,
    Exact,
    /// All five fixed components literal, resource = literal prefix + `*`.
    Prefix,
    Components(Box<[Pattern; 6]>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnPatternError {
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(
        "`{0}` is not an ARN: expected `arn:partition:service:region:account:resource` or `*`"
    )]
    NotArn(String),
    #[error("`{0}` uses a policy variable outside the resource part of the ARN")]
    VariableOutsideResource(String),
    #[error("`{0}` has a wildcard in the service segment")]
    WildcardService(String),
}

impl fmt::Display for ArnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source())
    }
}

impl ArnPattern {
    pub fn parse(source: &str, variables: bool) -> Result<Self, ArnPatternError> {
        let syntax = Syntax {
            wildcards: true,
            variables,
        };
        if source == "*" {
            return Ok(ArnPattern {
                text: Box::from(""),
                kind: ArnKind::Any,
            });
        }
        // The common cases, a literal ARN or a literal prefix and `*`, need no
        // segment parsing: check the shape and keep the text.
        let (body, prefix) = match source.strip_suffix('*') {
            Some(b) => (b, true),
            None => (source, false),
        };
        if !body.bytes().any(|b| matches!(b, b'*' | b'?' | b'$')) {
            if let Some(["arn", partition, service, _, _, resource]) = super::arn::split_arn(body) {
                if !partition.is_empty() && !service.is_empty() && (prefix || !resource.is_empty())
                {
                    return Ok(ArnPattern {
                        text: body.into(),
                        kind: if prefix {
                            ArnKind::Prefix
                        } else {
                            ArnKind::Exact
                        },
                    });
                }
            }
        }
        let segments = parse_segments(source, syntax)?;
        // Split the segments into six components at the first five literal colons.
        let mut comps: Vec<Vec<Segment>> = vec![Vec::new()];
        for seg in segments {
            match seg {
                Segment::Lit(s) if comps.len() < 6 => {
                    let mut rest: &str = &s;
                    while comps.len() < 6 {
                        match rest.split_once(':') {
                            Some((head, tail)) => {
                                if let Some(c) = comps.last_mut() {
                                    c.push(Segment::Lit(head.into()));
                                }
                                comps.push(Vec::new());
                                rest = tail;
                            }
                            None => break,
                        }
                    }
                    if let Some(c) = comps.last_mut() {
                        c.push(Segment::Lit(rest.into()));
                    }
                }
                Segment::Var(..) if comps.len() < 6 => {
                    return Err(ArnPatternError::VariableOutsideResource(source.into()))
                }
                other => {
                    if let Some(c) = comps.last_mut() {
                        c.push(other);
                    }
                }
            }
        }
        let comps: Vec<Pattern> = comps
            .into_iter()
            .map(|segs| Pattern::from_segments("", segs))
            .collect();
        let comps: Box<[Pattern; 6]> = comps
            .into_boxed_slice()
            .try_into()
            .map_err(|_| ArnPatternError::NotArn(source.into()))?;
        if comps[0].as_literal() != Some("arn")
            || comps[1].as_literal().is_some_and(str::is_empty)
            || comps[5].as_literal().is_some_and(str::is_empty)
        {
            return Err(ArnPatternError::NotArn(source.into()));
        }
        if comps[2].has_wildcards() {
            return Err(ArnPatternError::WildcardService(source.into()));
        }
        let head_literal = comps[..5].iter().all(|c| c.as_literal().is_some());
        let (text, kind) = match (&comps[5].kind, head_literal) {
            (Kind::Exact, true) => (literal_text(&comps), ArnKind::Exact),
            (Kind::Prefix, true) => (literal_text(&comps), ArnKind::Prefix),
            _ => (source.into(), ArnKind::Components(comps)),
        };
        Ok(ArnPattern { text, kind })
    }

    /// The pattern as written (escapes shown resolved).
    pub fn source(&self) -> std::borrow::Cow<'_, str> {
        match &self.kind {
            ArnKind::Any => "*".into(),
            ArnKind::Prefix => format!("{}*", self.text).into(),
            ArnKind::Exact | ArnKind::Components(_) => self.text.as_ref().into(),
        }
    }

    pub fn is_any(&self) -> bool {
        self.kind == ArnKind::Any
    }

    /// The exact ARN this pattern names, if it has no wildcard or variable.
    pub fn as_literal(&self) -> Option<&str> {
        match &self.kind {
            ArnKind::Exact => Some(&self.text),
            _ => None,
        }
    }

    pub fn has_variables(&self) -> bool {
        match &self.kind {
            ArnKind::Components(c) => c[5].has_variables(),
            _ => false,
        }
    }

    /// The service component, if literal (`lambda` in `arn:aws:lambda:...`).
    pub fn service(&self) -> Option<&str> {
        match &self.kind {
            ArnKind::Any => None,
            ArnKind::Exact | ArnKind::Prefix => self.text.split(':').nth(2),
            ArnKind::Components(c) => c[2].as_literal(),
        }
    }

    pub fn matches(&self, text: &str, vars: &dyn VarSource) -> bool {
        match &self.kind {
            ArnKind::Any => true,
            ArnKind::Exact => self.text.as_ref() == text,
            ArnKind::Prefix => text.starts_with(self.text.as_ref()),
            ArnKind::Components(comps) => {
                let mut parts = text.splitn(6, ':');
                comps.iter().all(|c| match parts.next() {
                    Some(part) => c.matches(part, vars),
                    None => false,
                })
            }
        }
    }
}

/// The concatenated literal text of components whose last may end in `*`
/// (which is dropped: the prefix is what matters).
fn literal_text(comps: &[Pattern; 6]) -> Box<str> {
    let mut out = String::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        if matches!(c.kind, Kind::Exact | Kind::Prefix) {
            out.push_str(&c.text);
        }
    }
    out.into()
}

/// The matcher before the linear rewrite, kept to test the new one against:
/// per-character steps with single-point backtracking, exact, prefix and
/// suffix patterns dispatched as before (ignoring case on the lower-cased
/// strings). It counts one `work` per step, the unit the new matcher counts
/// in bytes and characters.
#[cfg(test)]
mod reference {
    use super::{eq_ignore_case, work, ArnKind, ArnPattern, Kind, Pattern, Segment, VarSource};

    pub fn matches(p: &Pattern, text: &str, vars: &dyn VarSource, fold: bool) -> bool {
        let folded = |s: &str| {
            s.chars()
                .flat_map(char::to_lowercase)
                .collect::<Vec<char>>()
        };
        match &p.kind {
            Kind::Any => true,
            Kind::Exact if fold => eq_ignore_case(&p.text, text),
            Kind::Exact => p.text.as_ref() == text,
            Kind::Prefix if fold => folded(text).starts_with(&folded(&p.text)),
            Kind::Prefix => text.starts_with(p.text.as_ref()),
            Kind::Suffix if fold => folded(text).ends_with(&folded(&p.text)),
            Kind::Suffix => text.ends_with(p.text.as_ref()),
            Kind::General(g) => glob(&g.segments, text, vars, fold),
        }
    }

    pub fn arn_matches(p: &ArnPattern, text: &str, vars: &dyn VarSource) -> bool {
        match &p.kind {
            ArnKind::Any => true,
            ArnKind::Exact => p.text.as_ref() == text,
            ArnKind::Prefix => text.starts_with(p.text.as_ref()),
            ArnKind::Components(comps) => {
                let mut parts = text.splitn(6, ':');
                comps.iter().all(|c| match parts.next() {
                    Some(part) => matches(c, part, vars, false),
                    None => false,
                })
            }
        }
    }

    /// One step of the pattern: a concrete character, a wildcard, or the end.
    enum Atom {
        Char(char),
        Star,
        One,
        End,
        Unresolved,
    }

    /// Position in a segmented pattern: segment index and byte offset inside it.
    #[derive(Clone, Copy)]
    struct Cursor {
        seg: usize,
        off: usize,
    }

    /// Variable values, resolved once per match (index = segment index).
    const MAX_RESOLVED: usize = 16;

    fn atom(
        segments: &[Segment],
        resolved: &[Option<&str>],
        mut at: Cursor,
        vars: &dyn VarSource,
    ) -> (Atom, Cursor) {
        loop {
            let Some(seg) = segments.get(at.seg) else {
                return (Atom::End, at);
            };
            let text = match seg {
                Segment::Star => {
                    return (
                        Atom::Star,
                        Cursor {
                            seg: at.seg + 1,
                            off: 0,
                        },
                    )
                }
                Segment::One => {
                    return (
                        Atom::One,
                        Cursor {
                            seg: at.seg + 1,
                            off: 0,
                        },
                    )
                }
                Segment::Lit(s) => s.as_ref(),
                Segment::Var(v, _) => match resolved
                    .get(at.seg)
                    .copied()
                    .flatten()
                    .or_else(|| v.resolve(vars))
                {
                    Some(s) => s,
                    None => return (Atom::Unresolved, at),
                },
            };
            match text.get(at.off..).and_then(|t| t.chars().next()) {
                Some(c) => {
                    let next = if at.off + c.len_utf8() >= text.len() {
                        Cursor {
                            seg: at.seg + 1,
                            off: 0,
                        }
                    } else {
                        Cursor {
                            seg: at.seg,
                            off: at.off + c.len_utf8(),
                        }
                    };
                    return (Atom::Char(c), next);
                }
                None => {
                    at = Cursor {
                        seg: at.seg + 1,
                        off: 0,
                    }
                }
            }
        }
    }

    fn char_eq(a: char, b: char, fold: bool) -> bool {
        a == b || fold && a.to_lowercase().eq(b.to_lowercase())
    }

    /// Glob matching with single-point backtracking: correct for `*`/`?` globs
    /// and linear in practice.
    fn glob(segments: &[Segment], text: &str, vars: &dyn VarSource, fold: bool) -> bool {
        // Resolve each variable once, not once per character visited.
        let mut resolved: [Option<&str>; MAX_RESOLVED] = [None; MAX_RESOLVED];
        for (slot, seg) in resolved.iter_mut().zip(segments) {
            if let Segment::Var(v, _) = seg {
                match v.resolve(vars) {
                    Some(s) => *slot = Some(s),
                    None => return false,
                }
            }
        }
        let mut p = Cursor { seg: 0, off: 0 };
        let mut t = 0usize;
        let mut backtrack: Option<(Cursor, usize)> = None;
        loop {
            // One step: one character compared, skipped or backtracked over.
            work(1);
            let next_char = text.get(t..).and_then(|s| s.chars().next());
            let (a, after) = atom(segments, &resolved, p, vars);
            let advanced = match a {
                Atom::Unresolved => return false,
                Atom::End if t == text.len() => return true,
                Atom::End => false,
                Atom::Star => {
                    backtrack = Some((after, t));
                    p = after;
                    continue;
                }
                Atom::One => match next_char {
                    Some(c) => {
                        t += c.len_utf8();
                        true
                    }
                    None => false,
                },
                Atom::Char(pc) => match next_char {
                    Some(c) if char_eq(pc, c, fold) => {
                        t += c.len_utf8();
                        true
                    }
                    _ => false,
                },
            };
            if advanced {
                p = after;
                continue;
            }
            let Some((bp, bt)) = backtrack else {
                return false;
            };
            let Some(c) = text.get(bt..).and_then(|s| s.chars().next()) else {
                return false;
            };
            backtrack = Some((bp, bt + c.len_utf8()));
            p = bp;
            t = bt + c.len_utf8();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    thread_local! {
        /// What `work` adds up on this thread.
        pub(super) static WORK: Cell<usize> = const { Cell::new(0) };
    }

    /// The work one call does.
    fn work_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
        WORK.with(|w| w.set(0));
        let out = f();
        (out, WORK.with(Cell::get))
    }

    const GLOB: Syntax = Syntax {
        wildcards: true,
        variables: true,
    };

    struct Vars(&'static [(&'static str, &'static str)]);
    impl VarSource for Vars {
        fn var(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        }
    }

    fn m(p: &str, t: &str) -> bool {
        Pattern::parse(p, GLOB).unwrap().matches(t, &NoVars)
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("a*", "abc"));
        assert!(!m("a*", "bac"));
        assert!(m("*c", "abc"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(m("*/test/*", "1/2/test/3/object.jpg"));
        assert!(m("*/test/*", "/test/object.jpg"));
        assert!(!m("*/test/*", "1-test/object.jpg"));
        assert!(m("?é?", "aéb"));
        assert!(!m("abc", "abcd"));
        assert!(m("a**", "a"));
    }

    #[test]
    fn fast_paths_agree_with_general_glob() {
        for (p, t) in [
            ("ab*", "abc"),
            ("*bc", "abc"),
            ("abc", "abc"),
            ("*", "x"),
            ("ab*", "a"),
        ] {
            let pat = Pattern::parse(p, GLOB).unwrap();
            let segs = parse_segments(p, GLOB).unwrap();
            assert_eq!(
                pat.matches(t, &NoVars),
                glob(&segs, t, &NoVars, false),
                "{p} {t}"
            );
        }
    }

    #[test]
    fn variables_resolve_as_literals() {
        let vars = Vars(&[("aws:username", "a*"), ("aws:PrincipalTag/team", "red")]);
        let p = Pattern::parse("home/${aws:username}/*", GLOB).unwrap();
        assert!(p.matches("home/a*/x", &vars));
        assert!(!p.matches("home/abc/x", &vars));
        let d = Pattern::parse("${aws:PrincipalTag/dept, 'none'}", GLOB).unwrap();
        assert!(d.matches("none", &vars));
        let t = Pattern::parse("${AWS:principaltag/team}", GLOB).unwrap();
        assert!(t.matches("red", &vars));
        let missing = Pattern::parse("${aws:userid}", GLOB).unwrap();
        assert!(!missing.matches("", &vars));
    }

    #[test]
    fn escapes_are_literal() {
        let p = Pattern::parse("a${*}b${?}${$}", GLOB).unwrap();
        assert!(p.matches("a*b?$", &NoVars));
        assert!(!p.matches("axb?$", &NoVars));
        assert_eq!(p.as_literal(), Some("a*b?$"));
    }

    #[test]
    fn without_variables_dollar_braces_are_text() {
        let p = Pattern::parse(
            "${aws:username}",
            Syntax {
                wildcards: true,
                variables: false,
            },
        )
        .unwrap();
        assert!(p.matches("${aws:username}", &NoVars));
    }

    #[test]
    fn variable_errors() {
        assert!(Pattern::parse("${aws:username", GLOB).is_err());
        assert!(Pattern::parse("${}", GLOB).is_err());
        assert!(Pattern::parse("${a, b}", GLOB).is_err());
    }

    #[test]
    fn ignore_case() {
        let p = Pattern::parse("ABC", GLOB).unwrap();
        assert!(p.matches_ignore_case("abc", &NoVars));
        assert!(!p.matches("abc", &NoVars));
        assert!(eq_ignore_case("Straße", "STRAßE"));
    }

    fn arn(p: &str, t: &str) -> bool {
        ArnPattern::parse(p, true).unwrap().matches(t, &NoVars)
    }

    #[test]
    fn arn_patterns_match_component_wise() {
        let f = "arn:aws:lambda:us-east-1:111122223333:function:f";
        assert!(arn("*", f));
        assert!(arn(f, f));
        assert!(!arn(
            f,
            "arn:aws:lambda:us-east-1:111122223333:function:f:1"
        ));
        assert!(arn(
            "arn:aws:lambda:us-east-1:111122223333:function:f:*",
            &format!("{f}:1")
        ));
        assert!(!arn(
            "arn:aws:lambda:us-east-1:111122223333:function:f:*",
            f
        ));
        assert!(arn("arn:aws:lambda:us-east-1:111122223333:function:f*", f));
        assert!(arn(
            "arn:aws:lambda:us-east-1:111122223333:function:f*",
            &format!("{f}:prod")
        ));
        assert!(arn("arn:aws:lambda:*:111122223333:function:*", f));
        assert!(arn("arn:aws:lambda:us-east-?:*:function:f", f));
        // The documented ArnLike vs StringLike example.
        let p = "arn:aws:someservice:*:111122223333:finance/*";
        let v = "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt";
        assert!(!arn(p, v));
        assert!(m(p, v));
    }

    #[test]
    fn arn_pattern_errors() {
        assert!(matches!(
            ArnPattern::parse("foo", true),
            Err(ArnPatternError::NotArn(_))
        ));
        assert!(matches!(
            ArnPattern::parse("arn:aws:lambda:us-east-1:1", true),
            Err(ArnPatternError::NotArn(_))
        ));
        assert!(matches!(
            ArnPattern::parse("arn:aws:lam*:us-east-1:1:function:f", true),
            Err(ArnPatternError::WildcardService(_))
        ));
        assert!(matches!(
            ArnPattern::parse("arn:aws:lambda:${aws:region}:1:function:f", true),
            Err(ArnPatternError::VariableOutsideResource(_))
        ));
    }

    #[test]
    fn arn_variables_in_resource_part() {
        let vars = Vars(&[("aws:username", "alice")]);
        let p = ArnPattern::parse(
            "arn:aws:lambda:*:111122223333:function:${aws:username}-*",
            true,
        )
        .unwrap();
        assert!(p.matches(
            "arn:aws:lambda:us-east-1:111122223333:function:alice-f",
            &vars
        ));
        assert!(!p.matches(
            "arn:aws:lambda:us-east-1:111122223333:function:bob-f",
            &vars
        ));
        assert_eq!(p.service(), Some("lambda"));
    }

    /// A source with one variable, `v`, that may be absent.
    struct OneVar(Option<String>);
    impl VarSource for OneVar {
        fn var(&self, key: &str) -> Option<&str> {
            if key.eq_ignore_ascii_case("v") {
                self.0.as_deref()
            } else {
                None
            }
        }
    }

    /// Pattern pieces: few letters (so that matches happen), the case pairs
    /// that fold unlike ASCII (`ß`/`ẞ`, `İ`, the Kelvin sign), variables and
    /// escapes.
    const PIECES: &[&str] = &[
        "a",
        "b",
        "A",
        "ab",
        "*",
        "*",
        "?",
        "?",
        "é",
        "ß",
        "ẞ",
        "İ",
        "i",
        "K",
        "${v}",
        "${w, 'aẞ'}",
        "${*}",
        "${?}",
    ];

    /// Value characters: the pieces' and their case partners, the combining
    /// dot `İ` lower-cases to, and the wildcard characters as text.
    const CHARS: &[char] = &[
        'a', 'b', 'A', 'B', 'é', 'É', 'ß', 'ẞ', 'İ', 'i', 'I', '\u{307}', 'K', 'k', '*', '?',
    ];

    fn arb_text(chars: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(chars), 0..max).prop_map(String::from_iter)
    }

    /// Pieces and a value: either unrelated, or the pattern filled in (each
    /// `*` by some text, each `?` by a character, literals in some case) and
    /// then maybe cut at one end, so that matches and near misses are common.
    fn arb_case(
        pieces: &'static [&'static str],
        chars: &'static [char],
    ) -> impl Strategy<Value = (Vec<&'static str>, String, Option<String>)> {
        (
            prop::collection::vec(prop::sample::select(pieces), 0..10),
            prop::collection::vec(arb_text(chars, 4), 10),
            prop::collection::vec(0u8..8, 10),
            prop::option::weighted(0.8, arb_text(chars, 4)),
            arb_text(chars, 12),
            any::<bool>(),
        )
            .prop_map(|(ps, fill, how, var, random, derive)| {
                if !derive {
                    return (ps, random, var);
                }
                let mut value = String::new();
                for ((p, fill), how) in ps.iter().zip(&fill).zip(&how) {
                    match (*p, *how) {
                        (_, 7) => value.push_str(fill),
                        ("*", _) => value.push_str(fill),
                        ("?", _) => value.push(fill.chars().next().unwrap_or('x')),
                        ("${v}", _) => value.push_str(var.as_deref().unwrap_or("")),
                        ("${w, 'aẞ'}", _) => value.push_str("aẞ"),
                        ("${*}", _) => value.push('*'),
                        ("${?}", _) => value.push('?'),
                        (lit, 0 | 1) => value.push_str(&lit.to_uppercase()),
                        (lit, 2) => value.push_str(&lit.to_lowercase()),
                        (lit, _) => value.push_str(lit),
                    }
                }
                match how.last() {
                    Some(0) => {
                        value.pop();
                    }
                    Some(1) => value = value.chars().skip(1).collect(),
                    _ => {}
                }
                (ps, value, var)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5_000, .. ProptestConfig::default() })]

        /// The linear matcher decides as the old one did, with and without
        /// case, under every syntax.
        #[test]
        fn pattern_agrees_with_reference(
            (ps, value, var) in arb_case(PIECES, CHARS),
            wildcards in any::<bool>(),
            variables in any::<bool>(),
        ) {
            let source = ps.concat();
            let pattern = Pattern::parse(&source, Syntax { wildcards, variables }).unwrap();
            let vars = OneVar(var);
            prop_assert_eq!(
                pattern.matches(&value, &vars),
                reference::matches(&pattern, &value, &vars, false),
                "matches({:?}, {:?})", source, value
            );
            prop_assert_eq!(
                pattern.matches_ignore_case(&value, &vars),
                reference::matches(&pattern, &value, &vars, true),
                "matches_ignore_case({:?}, {:?})", source, value
            );
        }

        /// The same on a two-letter alphabet (and `é`, two bytes for one
        /// `?`), where literal runs overlap and occur many times.
        #[test]
        fn dense_patterns_agree_with_reference(
            (ps, value, var) in arb_case(
                &["a", "b", "ab", "aab", "aba", "ba", "*", "*", "?", "?", "é", "${v}"],
                &['a', 'b', 'é'],
            ),
        ) {
            let source = ps.concat();
            let pattern = Pattern::parse(&source, GLOB).unwrap();
            let vars = OneVar(var);
            prop_assert_eq!(
                pattern.matches(&value, &vars),
                reference::matches(&pattern, &value, &vars, false),
                "matches({:?}, {:?})", source, value
            );
            prop_assert_eq!(
                pattern.matches_ignore_case(&value, &vars),
                reference::matches(&pattern, &value, &vars, true),
                "matches_ignore_case({:?}, {:?})", source, value
            );
        }

        /// The same for ARN patterns, whose resource part may span colons.
        #[test]
        fn arn_pattern_agrees_with_reference(
            head in prop::sample::select(&[
                "arn:aws:lambda:us-east-1:1:",
                "arn:aws:lambda:*:1:",
                "arn:a?s:s3:::",
                "arn:*:lambda:us-*:?:",
            ][..]),
            (ps, resource, var) in arb_case(
                &["a", "b", "ab", ":", "/", "*", "*", "?", "${v}", "é"],
                &['a', 'b', ':', '/', 'é'],
            ),
            value_head in prop::sample::select(&[
                "arn:aws:lambda:us-east-1:1:",
                "arn:aws:lambda:us-west-2:1:",
                "arn:aws:s3:::",
                "arn:aws:lambda:us-east-1:12:",
                "arn:aws:lambda:us-east-1:",
            ][..]),
        ) {
            let source = format!("{head}{}", ps.concat());
            let Ok(pattern) = ArnPattern::parse(&source, true) else {
                return Ok(());
            };
            let value = format!("{value_head}{resource}");
            let vars = OneVar(var);
            prop_assert_eq!(
                pattern.matches(&value, &vars),
                reference::arn_matches(&pattern, &value, &vars),
                "{:?} against {:?}", source, value
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

        /// Middle chunks longer than one 64-position block of the `?`
        /// search, against values long enough to hold them several times.
        #[test]
        fn long_chunks_agree_with_reference(
            chunk in prop::collection::vec(
                prop::sample::select(&["a", "b", "?", "é", "ẞ", "İ"][..]),
                60..200,
            ),
            period in 1usize..5,
            noise in prop::collection::vec(
                (0usize..400, prop::sample::select(&['a', 'b', 'é', 'ß', 'İ'][..])),
                0..4,
            ),
            wrap in any::<bool>(),
        ) {
            let chunk = chunk.concat();
            let source = if wrap { format!("*{chunk}*") } else { format!("b*{chunk}*a") };
            let p = Pattern::parse(&source, GLOB).unwrap();
            // A value that holds the chunk (`?` filled in) after a few
            // periodic near misses, then some characters changed.
            let filled: String = chunk.chars().map(|c| if c == '?' { 'a' } else { c }).collect();
            let lead: String = filled.chars().take(period).collect();
            let mut value: Vec<char> = format!("b{}{filled}a", lead.repeat(60)).chars().collect();
            for (at, c) in noise {
                let len = value.len();
                if let Some(v) = value.get_mut(at % len) {
                    *v = c;
                }
            }
            let value: String = value.into_iter().collect();
            for fold in [false, true] {
                let got = if fold {
                    p.matches_ignore_case(&value, &NoVars)
                } else {
                    p.matches(&value, &NoVars)
                };
                prop_assert_eq!(got, reference::matches(&p, &value, &NoVars, fold), "{:?} {:?}", source, value);
            }
        }
    }

    #[test]
    fn middle_chunks_with_question_marks() {
        // `aba` at 0 is not followed by `?b`; the `aba` overlapping it is.
        let p = Pattern::parse("*aba?b*", GLOB).unwrap();
        assert!(p.matches("abababb", &NoVars));
        assert!(p.matches_ignore_case("ABAbABB", &NoVars));
        assert!(!p.matches("ababab", &NoVars));
        // A `?` before literal text: `é` is two bytes for one `?`.
        let p = Pattern::parse("x*?aa*y", GLOB).unwrap();
        assert!(p.matches("xéaay", &NoVars));
        assert!(!p.matches("xaay", &NoVars));
        // Characters outside ASCII, in no particular order.
        let p = Pattern::parse("*é?ßİ?ā*", GLOB).unwrap();
        assert!(p.matches("xéaßİbāx", &NoVars));
        assert!(p.matches_ignore_case("xÉaẞİbĀx", &NoVars));
        assert!(!p.matches("xéaßİbax", &NoVars));
    }

    #[test]
    fn fold_key_is_lowercase_equality() {
        // Equal keys if and only if equal lower-case mappings: each key has
        // one mapping and each mapping one key, over every `char`.
        use std::collections::HashMap;
        let mut by_key: HashMap<char, String> = HashMap::new();
        let mut by_lower: HashMap<String, char> = HashMap::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let lower: String = c.to_lowercase().collect();
            let key = fold_key(c);
            assert_eq!(
                by_key.entry(key).or_insert_with(|| lower.clone()),
                &lower,
                "{c:?}"
            );
            assert_eq!(*by_lower.entry(lower).or_insert(key), key, "{c:?}");
        }
    }

    #[test]
    fn ignore_case_folds_per_kind_as_before() {
        // Exact, prefix and suffix patterns compare lower-cased strings, the
        // general matcher single characters: `İ` lower-cases to `i` and a
        // combining dot, so it passes for `i` plus a dot only in the former.
        let p = |s| Pattern::parse(s, GLOB).unwrap();
        assert!(p("i\u{307}x*").matches_ignore_case("İX", &NoVars));
        assert!(p("i*").matches_ignore_case("İ", &NoVars));
        assert!(p("*\u{307}").matches_ignore_case("aİ", &NoVars));
        assert!(!p("*\u{307}").matches_ignore_case("ai", &NoVars));
        assert!(!p("i?*").matches_ignore_case("İx", &NoVars));
        assert!(p("?*ß").matches_ignore_case("xẞ", &NoVars));
        assert!(p("*k*").matches_ignore_case("\u{212A}", &NoVars));
        assert!(!p("*k?").matches_ignore_case("\u{212A}", &NoVars));
    }

    #[test]
    fn many_variables_resolve_past_the_cache() {
        // Slots past MAX_RESOLVED are resolved at each use.
        let source = "${v}-".repeat(MAX_RESOLVED + 4) + "*?";
        let p = Pattern::parse(&source, GLOB).unwrap();
        let vars = OneVar(Some("ab".into()));
        let value = "ab-".repeat(MAX_RESOLVED + 4) + "x";
        assert!(p.matches(&value, &vars));
        assert!(!p.matches(&value[1..], &vars));
        assert!(!p.matches(&value, &OneVar(None)));
        // In a middle chunk, joined into one run to search for.
        let middle = format!("*{}*", "-${v}".repeat(MAX_RESOLVED + 4));
        let p = Pattern::parse(&middle, GLOB).unwrap();
        let value = format!("x{}-y", "-ab".repeat(MAX_RESOLVED + 4));
        assert!(p.matches(&value, &vars));
        assert!(!p.matches(&value.replacen("-ab", "-b", 1), &vars));
    }

    #[test]
    fn short_question_chunks_cost_at_most_64_per_character() {
        // 63 characters, `?` between the literals: tried at every start.
        let source = format!("*{}c*b", "a?".repeat(31));
        let value = "a".repeat(3999) + "b";
        let p = Pattern::parse(&source, GLOB).unwrap();
        let (got, new) = work_of(|| p.matches(&value, &NoVars));
        assert!(!got);
        let bound = 3 * source.len() + 65 * value.len();
        assert!(new <= bound, "{new} steps, bound {bound}");
    }

    /// The worst cases: 1,900 bytes that nearly match a value of
    /// 4,000 at every position, behind `*`; and whether the pattern has `?`.
    #[allow(clippy::type_complexity)]
    fn worst_cases() -> Vec<(&'static str, String, String, Option<String>, bool, bool)> {
        let a = |n| "a".repeat(n);
        let value = a(3999) + "b";
        let ten_stars = format!("*{}*b", vec![a(189) + "c"; 10].join("*"));
        let ten_values = vec![a(399) + "c"; 10].concat() + "b";
        vec![
            (
                "issue",
                format!("{}{}c*b", "*".repeat(10), a(1900)),
                value.clone(),
                None,
                false,
                false,
            ),
            (
                "variable",
                "*${v}*b".into(),
                value.clone(),
                Some(a(1900) + "c"),
                false,
                false,
            ),
            (
                "ignore case",
                format!("*{}C*B", "A".repeat(1900)),
                value.clone(),
                None,
                true,
                false,
            ),
            ("ten stars", ten_stars, ten_values, None, false, false),
            (
                "question run",
                format!("*{}c*b", "?".repeat(1900)),
                value.clone(),
                None,
                false,
                true,
            ),
            (
                "question between",
                format!("*{}c*b", "a?".repeat(950)),
                value.clone(),
                None,
                false,
                true,
            ),
            (
                "question, case",
                format!("*{}C*B", "A?".repeat(950)),
                value.clone(),
                None,
                true,
                true,
            ),
        ]
    }

    #[test]
    fn work_is_bounded_by_pattern_and_value() {
        for (name, source, value, var, fold, wild) in worst_cases() {
            let p = Pattern::parse(&source, GLOB).unwrap();
            let vars = OneVar(var);
            let pattern_len = source.len() + vars.0.as_deref().map_or(0, str::len);
            // O(p + v) without `?`; O(p + v × ⌈p / 64⌉) with.
            let per_char = if wild { pattern_len.div_ceil(64) } else { 1 };
            let bound = 3 * (pattern_len + value.len() * per_char);
            let run = |f: &dyn Fn() -> bool| work_of(f);
            let (got, new) = if fold {
                run(&|| p.matches_ignore_case(&value, &vars))
            } else {
                run(&|| p.matches(&value, &vars))
            };
            assert!(new <= bound, "{name}: {new} steps, bound {bound}");
            // The old matcher, counted in the same unit, is far past it.
            let (want, old) = run(&|| reference::matches(&p, &value, &vars, fold));
            assert_eq!(got, want, "{name}");
            assert!(
                old > 10 * bound,
                "{name}: the old matcher took {old} steps, bound {bound}"
            );
        }
    }
}
