//! Validation findings, shaped like IAM Access Analyzer's `ValidatePolicy`.
//!
//! Every problem the loader sees becomes a [`Finding`] with an issue code
//! from the one registry ([`codes`]), which also gives its type (ERROR
//! rejects the store; the others inform), a message, and the place: file,
//! JSON path, line and column.

pub mod codes;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::json::{JsonPath, Pos};

pub use codes::IssueCode;

/// Characters of a value [`echo`] shows before it cuts the rest off.
pub const ECHO_LIMIT: usize = 200;

/// Characters of a whole finding message, or a JSON path, kept: a backstop
/// for text built from errors that quote input of their own.
pub const MESSAGE_LIMIT: usize = 1024;

/// Shows untrusted text (a Sid, an ARN, a key, a value, a file name) inside a
/// message: control characters (`\n`, `\r`, `\t`, `\u{0}`...), line and
/// paragraph separators and the invisible format characters (bidi overrides
/// such as U+202E, zero-width spaces) are written as escapes, so a value
/// cannot start a line of its own or reorder what follows it; and past
/// [`ECHO_LIMIT`] characters the rest is cut, with an ellipsis and the
/// value's length in bytes: `aaa…(1048576 bytes)`.
///
/// Every message that quotes input goes through this, in findings, load
/// errors and request errors alike.
pub fn echo(text: &str) -> Echo<'_> {
    Echo {
        text,
        limit: ECHO_LIMIT,
    }
}

/// [`echo`] with another length limit, in characters.
pub fn echo_max(text: &str, limit: usize) -> Echo<'_> {
    Echo { text, limit }
}

/// Untrusted text, shown escaped and shortened: see [`echo`].
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a> {
    text: &'a str,
    limit: usize,
}

/// Characters written as escapes rather than as themselves: every control
/// character (C0, DEL, C1), and the format characters a terminal or an
/// editor would not show, or would show by reordering or breaking the line
/// (bidi embeddings, overrides and isolates, zero-width characters, line and
/// paragraph separators, the byte order mark, tag characters).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
        )
}

impl Echo<'_> {
    /// True when the text would be shown as it is.
    fn is_plain(&self) -> bool {
        // Most text is ASCII without control bytes: one pass tells.
        let ascii_plain =
            self.text.len() <= self.limit && self.text.bytes().all(|b| (0x20..0x7f).contains(&b));
        ascii_plain
            || (self.text.len() <= self.limit.saturating_mul(4)
                && self.text.chars().count() <= self.limit
                && !self.text.chars().any(needs_escape))
    }
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        if self.is_plain() {
            return f.write_str(self.text);
        }
        for c in self.text.chars().take(self.limit) {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        if self.text.chars().nth(self.limit).is_some() {
            write!(f, "…({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

/// `text` as [`echo_max`] shows it, without a copy when it is shown as it is.
pub fn sanitize(text: String, limit: usize) -> String {
    let e = echo_max(&text, limit);
    if e.is_plain() {
        text
    } else {
        e.to_string()
    }
}

/// Severity, named as Access Analyzer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingType {
    /// The store is rejected.
    Error,
    /// Grants more access than was probably meant.
    SecurityWarning,
    /// Works, but is likely a mistake.
    Warning,
    /// Could be simpler or clearer.
    Suggestion,
}

impl fmt::Display for FindingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingType::Error => "ERROR",
            FindingType::SecurityWarning => "SECURITY_WARNING",
            FindingType::Warning => "WARNING",
            FindingType::Suggestion => "SUGGESTION",
        })
    }
}

/// Where a finding points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The store file, relative to the store directory (shared by every location in it).
    pub file: Arc<str>,
    /// JSON path inside the file, `$` for the whole document.
    pub path: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            echo_max(&self.file, MESSAGE_LIMIT),
            self.line,
            self.column,
            echo_max(&self.path, MESSAGE_LIMIT)
        )
    }
}

/// Where a statement is written: file, line and column. The JSON path is
/// left out: only findings need it, and they are made while parsing, so a
/// million statements do not each carry a rendered path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLocation {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Always `issue_code.severity()`; kept as a field for `--json`.
    pub finding_type: FindingType,
    pub issue_code: IssueCode,
    pub message: String,
    pub location: Location,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.location,
            self.finding_type,
            self.issue_code,
            echo_max(&self.message, MESSAGE_LIMIT)
        )
    }
}

/// Where a document being parsed comes from: the file, the path of the
/// document inside it, and, for a policy embedded as a JSON string, the
/// position of that string (inner positions mean nothing to the reader).
///
/// The path is borrowed, like [`JsonPath`] itself: it is rendered only when
/// a finding is reported, not for each of a million documents.
#[derive(Debug, Clone)]
pub struct Origin<'p> {
    pub file: Arc<str>,
    /// The document this one is nested in, and the path from its top to this one.
    within: Option<(&'p Origin<'p>, &'p JsonPath<'p>)>,
    pub embedded_at: Option<Pos>,
}

impl<'p> Origin<'p> {
    pub fn file(file: impl Into<Arc<str>>) -> Self {
        Origin {
            file: file.into(),
            within: None,
            embedded_at: None,
        }
    }

    /// A document nested at `path` of this one, written as a JSON string at `pos`.
    pub fn embedded(&'p self, path: &'p JsonPath<'p>, pos: Pos) -> Self {
        Origin {
            file: self.file.clone(),
            within: Some((self, path)),
            embedded_at: Some(self.embedded_at.unwrap_or(pos)),
        }
    }

    /// A document nested at `path` of this one, as a JSON object.
    pub fn nested(&'p self, path: &'p JsonPath<'p>) -> Self {
        Origin {
            file: self.file.clone(),
            within: Some((self, path)),
            embedded_at: self.embedded_at,
        }
    }

    /// Writes the path from the top of the file to this document.
    fn write_base(&self, out: &mut String) {
        if let Some((parent, path)) = self.within {
            parent.write_base(out);
            path.write_to(out);
        }
    }

    fn full_path(&self, path: &JsonPath) -> String {
        let mut full = String::new();
        self.write_base(&mut full);
        path.write_to(&mut full);
        full
    }

    /// Where a statement at `pos` of this document is written.
    pub fn statement_location(&self, pos: Pos) -> StatementLocation {
        let at = self.embedded_at.unwrap_or(pos);
        StatementLocation {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
        }
    }

    pub fn location(&self, path: &JsonPath, pos: Pos) -> Location {
        let full = self.full_path(path);
        let at = self.embedded_at.unwrap_or(pos);
        Location {
            file: self.file.clone(),
            path: if full.is_empty() {
                "$".into()
            } else {
                sanitize(full, MESSAGE_LIMIT)
            },
            line: at.line,
            column: at.column,
        }
    }
}

/// The findings of one load, in the order they were found.
#[derive(Debug, Clone, Default)]
pub struct Findings(Vec<Finding>);

impl Findings {
    pub fn new() -> Self {
        Findings(Vec::new())
    }

    /// Adds a finding; its type is the code's severity.
    pub fn push(&mut self, issue_code: IssueCode, location: Location, message: impl Into<String>) {
        // Messages quote input through `echo`; this catches any that an
        // error type quoted whole.
        self.0.push(Finding {
            finding_type: issue_code.severity(),
            issue_code,
            message: sanitize(message.into(), MESSAGE_LIMIT),
            location,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|f| f.finding_type == FindingType::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.0
            .iter()
            .filter(|f| f.finding_type == FindingType::Error)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Finding> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Findings) {
        self.0.extend(other.0);
    }
}

impl<'a> IntoIterator for &'a Findings {
    type Item = &'a Finding;
    type IntoIter = std::slice::Iter<'a, Finding>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_shows_plain_text_as_it_is() {
        for s in [
            "",
            "arn:aws:iam::111122223333:user/alice",
            "café ü 😀",
            "a\\nb",
        ] {
            assert_eq!(echo(s).to_string(), s);
        }
    }

    #[test]
    fn echo_escapes_what_could_break_or_reorder_a_line() {
        assert_eq!(
            echo("a\nstore OK\r\tb\u{0}\u{7f}\u{85}").to_string(),
            r"a\nstore OK\r\tb\u{0}\u{7f}\u{85}"
        );
        assert_eq!(
            echo("x\u{202e}gpj.exe\u{2066}\u{200b}\u{2028}\u{feff}\u{e0041}").to_string(),
            r"x\u{202e}gpj.exe\u{2066}\u{200b}\u{2028}\u{feff}\u{e0041}"
        );
        // Nothing it writes is a control or format character.
        let all: String = (0..0x11_0000u32).filter_map(char::from_u32).collect();
        assert!(!echo_max(&all, usize::MAX)
            .to_string()
            .chars()
            .any(needs_escape));
    }

    #[test]
    fn echo_cuts_long_text_with_its_length() {
        let long = "é".repeat(1_000);
        let shown = echo(&long).to_string();
        assert_eq!(shown, format!("{}…(2000 bytes)", "é".repeat(ECHO_LIMIT)));
        // The limit counts characters as shown, escapes as one.
        let lines = "\n".repeat(ECHO_LIMIT + 1);
        assert_eq!(
            echo(&lines).to_string(),
            format!("{}…({} bytes)", r"\n".repeat(ECHO_LIMIT), ECHO_LIMIT + 1)
        );
        assert_eq!(echo(&"a".repeat(ECHO_LIMIT)).to_string().len(), ECHO_LIMIT);
    }

    #[test]
    fn findings_and_locations_show_one_line_each() {
        let mut f = Findings::new();
        let loc = Location {
            file: "a\nb.json".into(),
            path: "Statement[0].x\ry".into(),
            line: 1,
            column: 2,
        };
        f.push(IssueCode::InternalError, loc, "m\u{0}".repeat(5_000));
        let finding = f.iter().next().unwrap();
        // Stored messages are escaped and cut already (as JSON shows them).
        assert!(
            finding.message.len() < MESSAGE_LIMIT * 8,
            "{}",
            finding.message.len()
        );
        assert!(finding.message.starts_with(r"m\u{0}m\u{0}"));
        let shown = finding.to_string();
        assert!(!shown.contains(char::is_control), "{shown}");
        assert!(
            shown.starts_with(r"a\nb.json:1:2: Statement[0].x\ry ERROR INTERNAL_ERROR: m\u{0}"),
            "{shown}"
        );
    }
}
