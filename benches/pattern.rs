//! Worst cases of the wildcard matcher (issue 11 item 3), new against old.
//!
//! Each case is one pattern against one 4,000-byte value that nearly matches
//! it everywhere, the shape that took the old per-character matcher 30 s per
//! decision over 64 `aws:TagKeys` values. `new/<case>` is the crate's
//! `Pattern` (or `ArnPattern`); `old/<case>` is `mod old` below, a frozen copy
//! of the matcher the crate had before the rewrite (commit 876b4dc), so the
//! ratio of the two is measured in the same run on the same input. The old
//! matcher is slow on these by design: `-- --quick` keeps the run short.
//! `typical/*` are ordinary short inputs, to show the common case did not pay
//! for the worst one.
#![allow(clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use iamd::policy::pattern::{ArnPattern, Pattern, Syntax, VarSource};

const GLOB: Syntax = Syntax {
    wildcards: true,
    variables: true,
};

/// One variable, `aws:username`.
struct User(String);

impl VarSource for User {
    fn var(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case("aws:username")
            .then_some(self.0.as_str())
    }
}

struct Case {
    name: &'static str,
    pattern: String,
    value: String,
    /// The `aws:username` value.
    user: String,
    ignore_case: bool,
}

fn a(n: usize) -> String {
    "a".repeat(n)
}

fn cases() -> Vec<Case> {
    // Ends in the last chunk, so the middle ones are searched for.
    let value = a(3999) + "b";
    let case = |name, pattern: String| Case {
        name,
        pattern,
        value: value.clone(),
        user: String::new(),
        ignore_case: false,
    };
    // Ten `*` around nine 189-byte near misses: each chunk is found only
    // after 210 starts that match 189 bytes and then fail.
    let ten_stars = Case {
        name: "ten_stars",
        pattern: format!("*{}*b", vec![format!("{}c", a(189)); 10].join("*")),
        value: vec![format!("{}c", a(399)); 10].concat() + "b",
        user: String::new(),
        ignore_case: false,
    };
    vec![
        // The policy: `*` ten times, 1,900 literal bytes, `c*b`.
        case("issue", format!("{}{}c*b", "*".repeat(10), a(1900))),
        ten_stars,
        // A run of 1,900 `?` before a byte the value never has.
        case("question_run", format!("*{}c*b", "?".repeat(1900))),
        // `?` between every literal byte: no long literal to search for, the
        // O(pattern × value) case of the new matcher.
        case("question_alternating", format!("*{}c*b", "a?".repeat(950))),
        Case {
            name: "variable",
            pattern: "*${aws:username}*b".into(),
            value: value.clone(),
            user: format!("{}c", a(1900)),
            ignore_case: false,
        },
        Case {
            name: "ignore_case",
            pattern: format!("*{}C*B", "A".repeat(1900)),
            value: value.clone(),
            user: String::new(),
            ignore_case: true,
        },
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern");
    for case in cases() {
        let vars = User(case.user.clone());
        let new = Pattern::parse(&case.pattern, GLOB).expect("valid pattern");
        let old = old::Pattern::parse(&case.pattern);
        let run_new = |v: &str| {
            if case.ignore_case {
                new.matches_ignore_case(v, &vars)
            } else {
                new.matches(v, &vars)
            }
        };
        let run_old = |v: &str| old.matches(v, &vars, case.ignore_case);
        assert_eq!(run_new(&case.value), run_old(&case.value), "{}", case.name);
        group.bench_function(format!("new/{}", case.name), |b| {
            b.iter(|| run_new(black_box(&case.value)))
        });
        group.bench_function(format!("old/{}", case.name), |b| {
            b.iter(|| run_old(black_box(&case.value)))
        });
    }

    // ArnLike and Resource: the resource part is a component pattern of its
    // own; the old matcher ran it through the same `glob`.
    let resource = format!("function:*{}c*b", a(1900));
    let arn = ArnPattern::parse(&format!("arn:aws:lambda:*:111122223333:{resource}"), true)
        .expect("valid ARN pattern");
    let value = format!(
        "arn:aws:lambda:us-east-1:111122223333:function:{}b",
        a(3999)
    );
    let old_resource = old::Pattern::parse(&resource);
    let value_resource = value.splitn(6, ':').nth(5).expect("six parts");
    let none = User(String::new());
    assert_eq!(
        arn.matches(&value, &none),
        old_resource.matches(value_resource, &none, false)
    );
    group.bench_function("new/arn", |b| {
        b.iter(|| arn.matches(black_box(&value), &none))
    });
    group.bench_function("old/arn", |b| {
        b.iter(|| old_resource.matches(black_box(value_resource), &none, false))
    });
    group.finish();

    let mut typical = c.benchmark_group("typical");
    for (name, pattern, value) in [
        ("path", "*/test/*", "1/2/test/3/object.jpg"),
        (
            "arn_like",
            "arn:aws:s3:::bucket/*/logs/*.gz",
            "arn:aws:s3:::bucket/app/logs/2026-01-01.gz",
        ),
        ("question", "lambda:????Function*", "lambda:listFunctions"),
        (
            "question_inside",
            "*/logs/????-??-??/*",
            "app/logs/2026-01-01/x.gz",
        ),
        ("variable", "home/${aws:username}/*", "home/alice/notes.txt"),
    ] {
        let vars = User("alice".into());
        let new = Pattern::parse(pattern, GLOB).expect("valid pattern");
        let old = old::Pattern::parse(pattern);
        assert_eq!(
            new.matches(value, &vars),
            old.matches(value, &vars, false),
            "{name}"
        );
        typical.bench_function(format!("new/{name}"), |b| {
            b.iter(|| new.matches(black_box(value), &vars))
        });
        typical.bench_function(format!("old/{name}"), |b| {
            b.iter(|| old.matches(black_box(value), &vars, false))
        });
    }
    typical.finish();
}

/// The matcher as it was before the rewrite, for the ratio: its parser and
/// `atom`/`glob` copied unchanged (the fast paths for exact, prefix and
/// suffix patterns left out: every pattern here has an inner wildcard).
mod old {
    use iamd::policy::pattern::VarSource;

    pub struct Variable {
        key: Box<str>,
        default: Option<Box<str>>,
    }

    impl Variable {
        fn resolve<'v>(&'v self, vars: &'v dyn VarSource) -> Option<&'v str> {
            vars.var(&self.key).or(self.default.as_deref())
        }
    }

    pub enum Segment {
        Lit(Box<str>),
        Star,
        One,
        Var(Variable),
    }

    pub struct Pattern {
        segments: Vec<Segment>,
    }

    impl Pattern {
        pub fn parse(source: &str) -> Self {
            let mut merged: Vec<Segment> = Vec::new();
            for seg in parse_segments(source) {
                match (merged.last_mut(), seg) {
                    (Some(Segment::Lit(a)), Segment::Lit(b)) => *a = format!("{a}{b}").into(),
                    (Some(Segment::Star), Segment::Star) => {}
                    (_, Segment::Lit(b)) if b.is_empty() => {}
                    (_, seg) => merged.push(seg),
                }
            }
            Pattern { segments: merged }
        }

        pub fn matches(&self, text: &str, vars: &dyn VarSource, fold: bool) -> bool {
            glob(&self.segments, text, vars, fold)
        }
    }

    fn parse_segments(source: &str) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("${") {
                let close = rest.find('}').expect("terminated variable");
                let inner = rest.get(2..close).unwrap_or_default();
                rest = rest.get(close + 1..).unwrap_or_default();
                match inner {
                    "*" | "?" | "$" => lit.push_str(inner),
                    _ => {
                        if !lit.is_empty() {
                            segments.push(Segment::Lit(std::mem::take(&mut lit).into()));
                        }
                        let (key, default) = match inner.split_once(',') {
                            None => (inner.trim(), None),
                            Some((key, d)) => {
                                let d = d.trim().trim_matches('\'');
                                (key.trim(), Some(d.into()))
                            }
                        };
                        segments.push(Segment::Var(Variable {
                            key: key.into(),
                            default,
                        }));
                    }
                }
                continue;
            }
            rest = rest.get(c.len_utf8()..).unwrap_or_default();
            match c {
                '*' | '?' => {
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
        segments
    }

    enum Atom {
        Char(char),
        Star,
        One,
        End,
        Unresolved,
    }

    #[derive(Clone, Copy)]
    struct Cursor {
        seg: usize,
        off: usize,
    }

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

    fn glob(segments: &[Segment], text: &str, vars: &dyn VarSource, fold: bool) -> bool {
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
