//! What iamd knows about AWS Lambda and the global condition keys, read from
//! the data files under `data/` (each names its public source) and compiled
//! into the binary.

use std::sync::LazyLock;

/// One Lambda IAM action from the Service Authorization Reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionInfo {
    /// `lambda:InvokeFunction`.
    pub name: &'static str,
    pub access_level: &'static str,
    /// Resource types (`function*`, `layerVersion*`); empty for `*`-only actions.
    pub resource_types: &'static str,
    /// Condition keys the action supports (comma-separated, as the reference lists them).
    pub condition_keys: &'static str,
    /// False when the action supports only `"Resource": "*"`.
    pub resource_level: bool,
}

impl ActionInfo {
    /// Whether the action supports the condition key `key`.
    pub fn supports_key(&self, key: &str) -> bool {
        self.condition_keys
            .split(',')
            .any(|k| k.trim().eq_ignore_ascii_case(key))
    }
}

static LAMBDA_ACTIONS: LazyLock<Vec<ActionInfo>> = LazyLock::new(|| {
    rows(include_str!("../data/lambda-actions.tsv"))
        .filter_map(|cols| {
            let name = *cols.first()?;
            Some(ActionInfo {
                name,
                access_level: cols.get(1).copied().unwrap_or_default(),
                resource_types: cols.get(2).copied().unwrap_or_default(),
                condition_keys: cols.get(3).copied().unwrap_or_default(),
                resource_level: cols.get(4).copied() == Some("yes"),
            })
        })
        .collect()
});

/// The data rows of a TSV file: comments and the header skipped.
fn rows(text: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .map(|l| l.split('\t').collect())
}

static LAMBDA_LOWER: LazyLock<Vec<String>> = LazyLock::new(|| {
    LAMBDA_ACTIONS
        .iter()
        .map(|a| a.name.to_lowercase())
        .collect()
});

/// Every Lambda action name in lower case, as action patterns are matched.
pub fn lambda_actions_lower() -> &'static [String] {
    &LAMBDA_LOWER
}

/// Every Lambda action, in the reference's order.
pub fn lambda_actions() -> &'static [ActionInfo] {
    &LAMBDA_ACTIONS
}

/// Looks up a Lambda action by name, ignoring case.
pub fn lambda_action(name: &str) -> Option<&'static ActionInfo> {
    LAMBDA_ACTIONS
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Actions of other services that iamd's own evaluation uses.
pub const OTHER_ACTIONS: &[&str] = &[
    "sts:AssumeRole",
    "sts:AssumeRoleWithSAML",
    "sts:AssumeRoleWithWebIdentity",
    "sts:TagSession",
    "sts:SetSourceIdentity",
    "iam:PassRole",
];

/// The value type of a condition key, as the Service Authorization Reference names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    String,
    Arn,
    Bool,
    Date,
    Numeric,
    IpAddress,
    ArrayOfString,
}

impl KeyType {
    pub fn is_multivalued(self) -> bool {
        self == KeyType::ArrayOfString
    }
}

/// The known condition keys: exact names sorted by length (a lookup
/// compares only names of the key's length), and the `tag-key` templates
/// by their prefix.
struct KeyTypes {
    exact: Vec<(&'static str, KeyType)>,
    templates: Vec<(&'static str, KeyType)>,
}

static KEY_TYPES: LazyLock<KeyTypes> = LazyLock::new(|| {
    let mut keys = KeyTypes {
        exact: Vec::new(),
        templates: Vec::new(),
    };
    for cols in rows(include_str!("../data/condition-keys.tsv")) {
        let ty = match cols.get(1).copied() {
            Some("String") => KeyType::String,
            Some("ARN") => KeyType::Arn,
            Some("Bool") => KeyType::Bool,
            Some("Date") => KeyType::Date,
            Some("Numeric") => KeyType::Numeric,
            Some("IPAddress") => KeyType::IpAddress,
            Some("ArrayOfString") => KeyType::ArrayOfString,
            _ => continue,
        };
        let Some(&name) = cols.first() else { continue };
        match name.strip_suffix("tag-key") {
            Some(prefix) => keys.templates.push((prefix, ty)),
            None => keys.exact.push((name, ty)),
        }
    }
    keys.exact.sort_by_key(|(name, _)| name.len());
    keys
});

/// The type of a known condition key (case-insensitive; `aws:PrincipalTag/x`
/// and the other tag keys match their `tag-key` templates).
pub fn condition_key_type(key: &str) -> Option<KeyType> {
    let keys = &*KEY_TYPES;
    let from = keys.exact.partition_point(|(k, _)| k.len() < key.len());
    let exact = keys
        .exact
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|(k, _)| k.len() == key.len())
        .find(|(k, _)| k.eq_ignore_ascii_case(key));
    let template = || {
        keys.templates.iter().find(|(prefix, _)| {
            key.len() > prefix.len()
                && key
                    .get(..prefix.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        })
    };
    exact.or_else(template).map(|(_, ty)| *ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_catalog_loads() {
        assert!(lambda_actions().len() > 100);
        let invoke = lambda_action("LAMBDA:invokefunction").unwrap();
        assert_eq!(invoke.name, "lambda:InvokeFunction");
        assert!(invoke.resource_level);
        assert!(
            !lambda_action("lambda:ListFunctions")
                .unwrap()
                .resource_level
        );
    }

    #[test]
    fn key_types() {
        assert_eq!(condition_key_type("AWS:SourceIP"), Some(KeyType::IpAddress));
        assert_eq!(
            condition_key_type("aws:PrincipalTag/team"),
            Some(KeyType::String)
        );
        assert_eq!(
            condition_key_type("aws:TagKeys"),
            Some(KeyType::ArrayOfString)
        );
        assert_eq!(condition_key_type("lambda:FunctionArn"), Some(KeyType::Arn));
        assert_eq!(condition_key_type("aws:PrincipalTag/"), None);
        assert_eq!(condition_key_type("s3:prefix"), None);
    }
}
