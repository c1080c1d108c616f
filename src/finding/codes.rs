//! Every issue code a finding can carry, in one registry: the code as
//! `iamd validate` prints it, its severity, and what it means.
//!
//! Findings carry an [`IssueCode`]; the string form exists only at the
//! edges (`iamd validate`, its `--json`, the README's table, which a test
//! checks against [`IssueCode::markdown_table`]).

use std::fmt;

use serde::{Serialize, Serializer};

use super::FindingType;

/// Declares the registry: one line per code, so the enum, its strings, its
/// severities and the README's table cannot drift apart.
macro_rules! issue_codes {
    ($($variant:ident => $code:literal, $severity:ident, $meaning:literal;)*) => {
        /// An issue code, with its severity and meaning (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum IssueCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl IssueCode {
            /// Every code, in the order the README lists them.
            pub const ALL: &'static [IssueCode] = &[$(IssueCode::$variant),*];

            /// The code as Access Analyzer would print it: `INVALID_EFFECT`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(IssueCode::$variant => $code,)*
                }
            }

            /// Whether the finding rejects the store, and how much it matters otherwise.
            pub const fn severity(self) -> FindingType {
                match self {
                    $(IssueCode::$variant => FindingType::$severity,)*
                }
            }

            /// What the code means, in one line.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(IssueCode::$variant => $meaning,)*
                }
            }
        }
    };
}

issue_codes! {
    // Reading the store's files.
    JsonSyntaxError => "JSON_SYNTAX_ERROR", Error,
        "a file, or a policy document embedded as a string, is not valid JSON";
    FileTooComplex => "FILE_TOO_COMPLEX", Error,
        "a file's (or an embedded document's) JSON values would take more memory than 10 bytes per byte plus 1 MiB: too many small values";
    StoreTooLarge => "STORE_TOO_LARGE", Error,
        "the store's JSON values together would take more than 10 bytes per byte plus 64 MiB; the files after that are not read";
    UnreadableFile => "UNREADABLE_FILE", Error,
        "a store file cannot be read, is over 64 MiB, or is not UTF-8";
    UnrecognizedFile => "UNRECOGNIZED_FILE", Error,
        "a file is none of the shapes iamd reads (authorization details, get-policy output, service control policies)";
    MissingField => "MISSING_FIELD", Error,
        "a field a store file needs is missing";
    InvalidType => "INVALID_TYPE", Error,
        "a value has the wrong JSON type";
    InvalidArn => "INVALID_ARN", Error,
        "an entity's `Arn` or a file's `ResourceArn` is not an ARN of the right kind";
    InvalidAccountId => "INVALID_ACCOUNT_ID", Error,
        "an `AccountId` or an SCP target is not a 12-digit account id";
    MissingDefaultVersion => "MISSING_DEFAULT_VERSION", Error,
        "a managed policy has no default version in `PolicyVersionList`";
    AmbiguousResource => "AMBIGUOUS_RESOURCE", Error,
        "a function policy without `ResourceArn` whose statements do not name exactly one resource";
    DuplicateEntity => "DUPLICATE_ENTITY", Error,
        "a user, group, role, managed policy or resource policy is defined twice";
    UnknownManagedPolicy => "UNKNOWN_MANAGED_POLICY", Error,
        "an attached managed policy or permissions boundary that no store file defines";
    UnknownGroup => "UNKNOWN_GROUP", Error,
        "a user is in a group that no store file defines";
    InternalError => "INTERNAL_ERROR", Error,
        "a check did not finish (a bug in iamd); the store is rejected rather than half-checked";
    // The policy grammar.
    InvalidDocument => "INVALID_DOCUMENT", Error,
        "a policy document is not a JSON object (or, in a store file, a JSON string holding one)";
    InvalidEncoding => "INVALID_ENCODING", Error,
        "a policy document given as a string is neither JSON nor URL-encoded UTF-8 JSON";
    PolicySizeExceeded => "POLICY_SIZE_EXCEEDED", Error,
        "a policy is over its quota in non-white-space characters: managed 6,144, inline per user 2,048 / group 5,120 / role 10,240 (all of an entity's inline policies together), SCP 5,120, trust 8,192, Lambda function policy 20 KB";
    UnknownElement => "UNKNOWN_ELEMENT", Error,
        "an element the policy grammar does not have (element names are case-sensitive)";
    DuplicateKey => "DUPLICATE_KEY", Error,
        "a name appears twice in one JSON object of a policy";
    InvalidVersion => "INVALID_VERSION", Error,
        "`Version` is neither 2012-10-17 nor 2008-10-17 (managed policies need 2012-10-17)";
    InvalidId => "INVALID_ID", Error,
        "`Id` is not a string";
    MissingStatement => "MISSING_STATEMENT", Error,
        "the policy has no `Statement`";
    InvalidStatement => "INVALID_STATEMENT", Error,
        "`Statement`, or one statement, is not a JSON object (or an array of them)";
    EmptyArray => "EMPTY_ARRAY", Error,
        "an element that takes a string or a list is an empty array";
    MissingEffect => "MISSING_EFFECT", Error,
        "a statement has no `Effect`";
    InvalidEffect => "INVALID_EFFECT", Error,
        "`Effect` is not \"Allow\" or \"Deny\" (case-sensitive)";
    InvalidSid => "INVALID_SID", Error,
        "`Sid` is not a string, or has characters the policy type does not allow";
    DuplicateSid => "DUPLICATE_SID", Error,
        "two statements of one policy have the same `Sid`";
    MissingAction => "MISSING_ACTION", Error,
        "a statement has neither `Action` nor `NotAction`";
    ActionAndNotAction => "ACTION_AND_NOTACTION", Error,
        "a statement has both `Action` and `NotAction`";
    InvalidAction => "INVALID_ACTION", Error,
        "an action is not `service:Action` or `*` (the service prefix takes no wildcards)";
    MissingResource => "MISSING_RESOURCE", Error,
        "a statement (other than in a trust policy) has neither `Resource` nor `NotResource`";
    ResourceAndNotResource => "RESOURCE_AND_NOTRESOURCE", Error,
        "a statement has both `Resource` and `NotResource`";
    InvalidArnResource => "INVALID_ARN_RESOURCE", Error,
        "a resource is not an ARN or `*`, or contains a control character";
    MissingPrincipal => "MISSING_PRINCIPAL", Error,
        "a statement of a resource-based or trust policy has no `Principal`";
    PrincipalInIdentityPolicy => "PRINCIPAL_IN_IDENTITY_POLICY", Error,
        "an identity-based policy or SCP has `Principal` or `NotPrincipal`";
    PrincipalAndNotPrincipal => "PRINCIPAL_AND_NOTPRINCIPAL", Error,
        "a statement has both `Principal` and `NotPrincipal`";
    NotPrincipalWithAllow => "NOTPRINCIPAL_WITH_ALLOW", Error,
        "`NotPrincipal` with \"Effect\": \"Allow\", which IAM does not support";
    NotPrincipalInTrustPolicy => "NOTPRINCIPAL_IN_TRUST_POLICY", Error,
        "`NotPrincipal` in a role trust policy";
    InvalidPrincipal => "INVALID_PRINCIPAL", Error,
        "a principal is not an account, an IAM ARN, a unique id, a service or a federated provider";
    WildcardInPrincipal => "WILDCARD_IN_PRINCIPAL", Error,
        "an `AWS` principal with a wildcard other than \"*\" alone";
    InvalidCondition => "INVALID_CONDITION", Error,
        "`Condition`, or an operator's block in it, is not a JSON object";
    InvalidConditionOperator => "INVALID_CONDITION_OPERATOR", Error,
        "a condition operator IAM does not have";
    InvalidConditionValue => "INVALID_CONDITION_VALUE", Error,
        "a condition value the operator cannot compare (not a date, a number, an address, an ARN...)";
    EmptyConditionValues => "EMPTY_CONDITION_VALUES", Error,
        "a condition key with an empty list of values";
    // Security warnings.
    PublicAccess => "PUBLIC_ACCESS", SecurityWarning,
        "\"Principal\": \"*\" with no condition: anyone, anonymous callers included, may use the resource";
    MissingSourceCondition => "MISSING_SOURCE_CONDITION", SecurityWarning,
        "a service principal granted access without `aws:SourceArn` or `aws:SourceAccount` (the confused deputy the Lambda guide warns about)";
    AllowWithNotResource => "ALLOW_WITH_NOT_RESOURCE", SecurityWarning,
        "\"Allow\" with `NotResource` grants every resource not listed, including ones created later";
    ForAllValuesWithAllow => "FOR_ALL_VALUES_WITH_ALLOW", SecurityWarning,
        "`ForAllValues:` with \"Allow\" is also true when the request has no such key";
    // Warnings.
    MissingVersion => "MISSING_VERSION", Warning,
        "no `Version`: the policy is read as 2008-10-17, where `${...}` is literal text";
    VariablesNeed2012Version => "VARIABLES_NEED_2012_VERSION", Warning,
        "`${...}` in a Version 2008-10-17 policy is literal text, not a policy variable";
    EmptyServicePrincipal => "EMPTY_SERVICE_PRINCIPAL", Warning,
        "an empty `Service` principal, which matches no caller";
    CanonicalUserPrincipal => "CANONICAL_USER_PRINCIPAL", Warning,
        "a `CanonicalUser` principal, which only Amazon S3 uses: it matches no caller here";
    UnknownAction => "UNKNOWN_ACTION", Warning,
        "a `lambda:` action pattern that matches no Lambda action";
    InvalidResourceAccountId => "INVALID_ACCOUNT_ID", Warning,
        "a Lambda ARN in `Resource` whose account is not 12 digits, so it names no real function";
    SetOperatorOnSingleValuedKey => "SET_OPERATOR_ON_SINGLE_VALUED_KEY", Warning,
        "`ForAnyValue:` or `ForAllValues:` on a single-valued condition key";
    MultivaluedKeyWithoutSetOperator => "MULTIVALUED_KEY_WITHOUT_SET_OPERATOR", Warning,
        "a multivalued condition key compared without `ForAnyValue:` or `ForAllValues:`";
    MismatchedKeyType => "MISMATCHED_KEY_TYPE", Warning,
        "a condition operator that does not compare values of its key's type";
    ResourceMismatch => "RESOURCE_MISMATCH", Warning,
        "a function policy statement whose `Resource` does not cover the resource the policy is attached to";
    MissingTrustPolicy => "MISSING_TRUST_POLICY", Warning,
        "a role without `AssumeRolePolicyDocument`: nobody can assume it";
    UnattachedScp => "UNATTACHED_SCP", Warning,
        "an SCP with no `Targets`, which affects no account";
    UnknownField => "UNKNOWN_FIELD", Warning,
        "a field of a get-policy file that iamd ignores";
}

impl IssueCode {
    /// The README's table of codes, one row per code in registry order.
    pub fn markdown_table() -> String {
        let mut table = String::from("| code | type | meaning |\n|---|---|---|\n");
        for code in Self::ALL {
            table.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.as_str(),
                code.severity(),
                code.meaning()
            ));
        }
        table
    }
}

impl fmt::Display for IssueCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for IssueCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_screaming_snake_case_and_meanings_one_line() {
        for code in IssueCode::ALL {
            let s = code.as_str();
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{s}"
            );
            let meaning = code.meaning();
            assert!(!meaning.is_empty() && !meaning.contains(['\n', '|']), "{s}");
        }
    }

    #[test]
    fn a_code_string_is_shared_only_by_entries_of_different_severities() {
        // INVALID_ACCOUNT_ID is an ERROR in a store file's account fields and
        // a WARNING in a policy's resource ARN: two entries, one string.
        for (i, a) in IssueCode::ALL.iter().enumerate() {
            for b in IssueCode::ALL.iter().skip(i + 1) {
                if a.as_str() == b.as_str() {
                    assert_ne!(a.severity(), b.severity(), "{a}");
                }
            }
        }
    }

    /// The table between these markers in README.md is [`IssueCode::markdown_table`].
    const BEGIN: &str = "<!-- issue codes: generated from src/finding/codes.rs -->\n";
    const END: &str = "<!-- end of issue codes -->";

    #[test]
    fn the_readme_lists_every_code_as_the_registry_does() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md is readable");
        let table = readme
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(table, _)| table)
            .expect("README.md has the issue-code markers");
        let expected = IssueCode::markdown_table();
        assert!(
            table == expected,
            "README.md's table of issue codes is out of date; put this between the markers:\n{expected}"
        );
    }

    #[test]
    fn every_code_is_reported_somewhere() {
        // A code in the registry (and so in the README) that no code path
        // reports would document a finding that cannot happen.
        fn sources(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("codes.rs")
                {
                    let text = std::fs::read_to_string(&path).expect("source is readable");
                    // Uses in tests do not count.
                    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
                    out.push_str(body);
                }
            }
        }
        let mut text = String::new();
        sources(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
            &mut text,
        );
        for code in IssueCode::ALL {
            let name = format!("IssueCode::{code:?}");
            let used = text.match_indices(&name).any(|(at, _)| {
                !text
                    .get(at + name.len()..)
                    .and_then(|rest| rest.chars().next())
                    .is_some_and(|c| c.is_alphanumeric())
            });
            assert!(used, "{name} is never reported");
        }
    }
}
