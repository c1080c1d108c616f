//! Validation findings, shaped like IAM Access Analyzer's `ValidatePolicy`.
//!
//! Every problem the loader sees becomes a [`Finding`] with a type
//! (ERROR rejects the store; the others inform), a stable issue code, a
//! message, and the place: file, JSON path, line and column.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::json::{JsonPath, Pos};

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
            self.file, self.line, self.column, self.path
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
    pub finding_type: FindingType,
    pub issue_code: &'static str,
    pub message: String,
    pub location: Location,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.location, self.finding_type, self.issue_code, self.message
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
            path: if full.is_empty() { "$".into() } else { full },
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

    pub fn push(
        &mut self,
        finding_type: FindingType,
        issue_code: &'static str,
        location: Location,
        message: impl Into<String>,
    ) {
        self.0.push(Finding {
            finding_type,
            issue_code,
            message: message.into(),
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
