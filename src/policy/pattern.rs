//! Compiled string patterns: IAM wildcards (`*`, `?`) and policy variables.
//!
//! A pattern is parsed once, at load time, into literal runs, wildcards and
//! variables (`${aws:username}`, `${aws:PrincipalTag/team, 'none'}`, and the
//! escapes `${*}`, `${?}`, `${$}` that stand for the literal character). Each
//! pattern is then sent to its cheapest matcher (exact, prefix, suffix, any)
//! like globset does; only patterns with inner wildcards or variables run the
//! general matcher. Variables resolve against the request while matching,
//! so matching never allocates. A variable's value, like an escape, is always
//! literal text: a user named `a*` does not become a wildcard.

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
    Var(Variable),
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
        self.segments().iter().any(|s| matches!(s, Segment::Var(_)))
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
            Segment::Var(v) => Some(v),
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

    /// Match ignoring case (Unicode lower-case mapping).
    pub fn matches_ignore_case(&self, text: &str, vars: &dyn VarSource) -> bool {
        let folded = |s: &str| {
            s.chars()
                .flat_map(char::to_lowercase)
                .collect::<Vec<char>>()
        };
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => eq_ignore_case(&self.text, text),
            Kind::Prefix => folded(text).starts_with(&folded(&self.text)),
            Kind::Suffix => folded(text).ends_with(&folded(&self.text)),
            Kind::General(g) => glob(&g.segments, text, vars, true),
        }
    }
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
                    segments.push(Segment::Var(parse_variable(inner, source)?));
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
            Segment::Var(v) => match resolved
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
        if let Segment::Var(v) = seg {
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
                Segment::Var(_) if comps.len() < 6 => {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
