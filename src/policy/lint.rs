//! Access-Analyzer-style warnings over typed policy elements: what a policy
//! that parses may still get wrong (public access, a confused deputy,
//! condition keys used against their type, actions that do not exist).
//!
//! Each lint looks at a typed value (a statement, a clause, a pattern, a
//! principal entry) and says what is wrong with it; the grammar
//! ([`super::grammar`]), which knows where the value was written, says
//! where. The grammar calls each lint as soon as the value is built rather
//! than in a pass after it: findings then keep the order they are written
//! in, among the grammar's errors, and a statement with an error in one
//! element still gets the warnings of its others, as it always has.
//!
//! One lint reads the document as written: [`variables_in_2008_policy`]
//! looks for `${` anywhere in `Statement`, statements that did not parse
//! included, which no typed value keeps.

use super::condition::{BaseOperator as B, Clause, SetQualifier};
use super::pattern::{ArnPattern, NoVars, Pattern};
use super::{arn::is_account_id, Arn, Effect, PolicyKind, PrincipalSpec, Statement};
use crate::catalog::{self, KeyType as K};
use crate::finding::{echo, IssueCode};
use crate::json::{Node, Value};

/// A warning about a typed value: the code and the message, without a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub code: IssueCode,
    pub message: String,
}

impl Lint {
    fn new(code: IssueCode, message: impl Into<String>) -> Self {
        Lint {
            code,
            message: message.into(),
        }
    }
}

/// A document without `Version` (reported at the document).
pub fn missing_version() -> Lint {
    Lint::new(
        IssueCode::MissingVersion,
        "no `Version`: the policy is read as 2008-10-17, so `${...}` policy variables are literal text; add \"Version\": \"2012-10-17\"",
    )
}

/// `${` in the `Statement` of a 2008-10-17 policy, where it is literal text
/// (reported at `Statement`).
pub fn variables_in_2008_policy(statement: &Node) -> Option<Lint> {
    fn contains_variable_syntax(node: &Node) -> bool {
        match &node.value {
            Value::String(s) => s.contains("${"),
            Value::Array(items) => items.iter().any(contains_variable_syntax),
            Value::Object(members) => members.iter().any(|m| contains_variable_syntax(&m.value)),
            _ => false,
        }
    }
    contains_variable_syntax(statement).then(|| {
        Lint::new(
            IssueCode::VariablesNeed2012Version,
            "`${...}` is literal text under Version 2008-10-17; policy variables need \"Version\": \"2012-10-17\"",
        )
    })
}

/// A `Service` principal entry.
pub fn service_principal(service: &str) -> Option<Lint> {
    service.is_empty().then(|| {
        Lint::new(
            IssueCode::EmptyServicePrincipal,
            "an empty service principal matches no caller",
        )
    })
}

/// A `CanonicalUser` principal entry.
pub fn canonical_user_principal() -> Lint {
    Lint::new(
        IssueCode::CanonicalUserPrincipal,
        "`CanonicalUser` principals are used only by Amazon S3 and match no caller here",
    )
}

/// An action pattern (lower-cased), `written` as the policy has it.
pub fn action(pattern: &Pattern, written: &str) -> Option<Lint> {
    if !pattern.source().starts_with("lambda:") {
        return None;
    }
    let names = catalog::lambda_actions_lower();
    let known = match pattern.as_literal() {
        Some(l) => names.iter().any(|n| n == l),
        None => names.iter().any(|n| pattern.matches(n, &NoVars)),
    };
    (!known).then(|| {
        Lint::new(
            IssueCode::UnknownAction,
            format!("`{}` matches no AWS Lambda action", echo(written)),
        )
    })
}

/// `NotResource` in a statement with this effect (reported at `NotResource`).
pub fn not_resource(effect: Option<Effect>) -> Option<Lint> {
    (effect == Some(Effect::Allow)).then(|| {
        Lint::new(
            IssueCode::AllowWithNotResource,
            "\"Allow\" with `NotResource` grants every resource not listed, including ones created later",
        )
    })
}

/// A resource pattern, `written` as the policy has it.
pub fn resource(pattern: &ArnPattern, written: &str) -> Option<Lint> {
    let arn = pattern.as_literal().and_then(|s| Arn::parse(s).ok())?;
    (arn.service == "lambda" && !arn.account.is_empty() && !is_account_id(arn.account)).then(|| {
        Lint::new(
            IssueCode::InvalidResourceAccountId,
            format!(
                "`{}` is not a 12-digit account id, so `{}` names no real function",
                echo(arn.account),
                echo(written)
            ),
        )
    })
}

/// A condition clause of a statement with this effect, against what the
/// catalog knows of its key's type; in the order they are reported.
pub fn clause(clause: &Clause, effect: Option<Effect>) -> Vec<Lint> {
    let mut lints = Vec::new();
    let Some(ty) = catalog::condition_key_type(&clause.key) else {
        return lints;
    };
    let op = clause.operator.base;
    let key = echo(&clause.key);
    let operator = &clause.operator;
    if operator.qualifier.is_some() && !ty.is_multivalued() {
        lints.push(Lint::new(
            IssueCode::SetOperatorOnSingleValuedKey,
            format!("`{key}` is single-valued; `{operator}` treats it as a one-element set, which is rarely what is meant"),
        ));
    }
    if operator.qualifier.is_none() && ty.is_multivalued() && op != B::Null {
        lints.push(Lint::new(
            IssueCode::MultivaluedKeyWithoutSetOperator,
            format!(
                "`{key}` is multivalued; qualify `{operator}` with ForAnyValue: or ForAllValues:"
            ),
        ));
    }
    if operator.qualifier == Some(SetQualifier::ForAllValues)
        && effect == Some(Effect::Allow)
        && !operator.if_exists
    {
        lints.push(Lint::new(
            IssueCode::ForAllValuesWithAllow,
            format!("`{operator}` is true when the request has no `{key}` at all; with Allow, also require the key (Null: false)"),
        ));
    }
    if !operator_fits(op, ty, &clause.key) && op != B::Null {
        lints.push(Lint::new(
            IssueCode::MismatchedKeyType,
            format!("`{key}` is of type {ty:?}, which `{operator}` does not compare as such"),
        ));
    }
    lints
}

/// Whether `op` compares values of type `ty` as such (`key` for the one
/// date key that numeric operators compare too).
fn operator_fits(op: B, ty: K, key: &str) -> bool {
    let numeric = matches!(
        op,
        B::NumericEquals
            | B::NumericNotEquals
            | B::NumericLessThan
            | B::NumericLessThanEquals
            | B::NumericGreaterThan
            | B::NumericGreaterThanEquals
    );
    match ty {
        K::String | K::ArrayOfString => matches!(
            op,
            B::StringEquals
                | B::StringNotEquals
                | B::StringEqualsIgnoreCase
                | B::StringNotEqualsIgnoreCase
                | B::StringLike
                | B::StringNotLike
        ),
        K::Arn => matches!(
            op,
            B::ArnEquals
                | B::ArnLike
                | B::ArnNotEquals
                | B::ArnNotLike
                | B::StringEquals
                | B::StringLike
                | B::StringNotEquals
                | B::StringNotLike
        ),
        K::Bool => op == B::Bool,
        K::Date => {
            matches!(
                op,
                B::DateEquals
                    | B::DateNotEquals
                    | B::DateLessThan
                    | B::DateLessThanEquals
                    | B::DateGreaterThan
                    | B::DateGreaterThanEquals
            ) || (key.eq_ignore_ascii_case("aws:EpochTime") && numeric)
        }
        K::Numeric => numeric,
        K::IpAddress => matches!(op, B::IpAddress | B::NotIpAddress),
    }
}

/// A whole statement of a `kind` policy: who its Allow reaches (reported
/// at `Principal`).
pub fn statement(kind: PolicyKind, s: &Statement) -> Option<Lint> {
    if s.effect != Effect::Allow || kind != PolicyKind::Resource {
        return None;
    }
    let has_key = |name: &str| {
        s.condition
            .clauses
            .iter()
            .any(|c| c.key.eq_ignore_ascii_case(name))
    };
    match &s.principal.as_ref()?.spec {
        PrincipalSpec::Everyone if s.condition.is_empty() => Some(Lint::new(
            IssueCode::PublicAccess,
            "\"Principal\": \"*\" with no condition lets anyone, including anonymous callers, use the resource",
        )),
        PrincipalSpec::Listed(list)
            if list.services.iter().any(|s| !s.is_empty())
                && !has_key("aws:SourceArn")
                && !has_key("aws:SourceAccount") =>
        {
            Some(Lint::new(
                IssueCode::MissingSourceCondition,
                "a service principal is granted access without aws:SourceArn or aws:SourceAccount: other accounts' resources could make the service invoke this function (confused deputy)",
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::grammar::tests::{codes, parse_with};
    use super::*;
    use crate::finding::FindingType;

    #[test]
    fn seed_function_policy_loads_with_warnings() {
        let (p, f) = parse_with(
            PolicyKind::Resource,
            r#"{ "Version":"2012-10-17", "Statement":[ { "Effect":"Allow", "Principal":{ "Service":"" }, "Action":"lambda:InvokeFunction", "Resource":"arn:aws:lambda:region:account-id:function:HelloWorld", "Sid":"65bafc90-6a1f-42a8-a7ab-8aa9bc877985", "Condition":{ "StringEquals":{ "AWS:SourceAccount":"account-id" }, "ArnLike":{ "AWS:SourceArn":"arn:aws:s3:::ExampleBucket" } } } ] }"#,
        );
        assert!(p.is_some(), "{f:?}");
        assert!(!f.has_errors());
        assert!(codes(&f).contains(&IssueCode::EmptyServicePrincipal));
        assert!(codes(&f).contains(&IssueCode::InvalidResourceAccountId));
    }

    #[test]
    fn security_warnings() {
        let (p, f) = parse_with(
            PolicyKind::Resource,
            r#"{"Version":"2012-10-17","Statement":[
              {"Sid":"s3","Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-1:111122223333:function:f"},
              {"Sid":"pub","Effect":"Allow","Principal":"*","Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-1:111122223333:function:f"},
              {"Sid":"none","Effect":"Allow","Principal":"*","Action":"lambda:InvokeFunctionz","Resource":"arn:aws:lambda:us-east-1:111122223333:function:f","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-abc"}}}]}"#,
        );
        assert!(p.is_some());
        let c = codes(&f);
        assert!(c.contains(&IssueCode::MissingSourceCondition), "{c:?}");
        assert!(c.contains(&IssueCode::PublicAccess));
        assert!(c.contains(&IssueCode::UnknownAction));
        assert!(f
            .iter()
            .any(|f| f.finding_type == FindingType::SecurityWarning));
    }

    #[test]
    fn version_2008_warns_about_variables() {
        let (p, f) = parse_with(
            PolicyKind::Inline,
            r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::b/${aws:username}/*"}}"#,
        );
        assert!(p.is_some());
        assert!(codes(&f).contains(&IssueCode::VariablesNeed2012Version));
    }

    #[test]
    fn warnings_keep_their_place_among_errors() {
        // Statement 0 fails in its condition; its action's warning still
        // shows, before the error, as written. Statement 1 only warns.
        let (p, f) = parse_with(
            PolicyKind::Managed,
            r#"{"Statement":[
              {"Effect":"Allow","Action":"lambda:Nope","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"never"}}},
              {"Effect":"Allow","Action":"lambda:InvokeFunction","NotResource":"arn:aws:lambda:us-east-1:1:function:f","Condition":{"StringEquals":{"aws:TagKeys":"a"}}}]}"#,
        );
        assert!(p.is_none());
        assert_eq!(
            codes(&f),
            [
                IssueCode::MissingVersion,
                IssueCode::UnknownAction,
                IssueCode::InvalidConditionValue,
                IssueCode::AllowWithNotResource,
                IssueCode::InvalidResourceAccountId,
                IssueCode::MultivaluedKeyWithoutSetOperator,
            ]
        );
        let paths: Vec<_> = f.iter().map(|f| f.location.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$",
                "Statement[0].Action",
                "Statement[0].Condition.DateLessThan.aws:CurrentTime",
                "Statement[1].NotResource",
                "Statement[1].NotResource",
                "Statement[1].Condition.StringEquals.aws:TagKeys",
            ]
        );
    }

    #[test]
    fn condition_lints_follow_the_key_type() {
        let compile = |op: &str, key: &str| {
            let operator = super::super::condition::Operator::parse(op).unwrap();
            let value = if op == "Null" { "true" } else { "1" };
            Clause::compile(operator, key, &[value.to_owned()], true).unwrap()
        };
        let lint_codes = |c: &Clause, effect| -> Vec<IssueCode> {
            clause(c, effect).into_iter().map(|l| l.code).collect()
        };
        assert_eq!(
            lint_codes(&compile("NumericLessThan", "aws:EpochTime"), None),
            []
        );
        assert_eq!(
            lint_codes(&compile("NumericLessThan", "aws:CurrentTime"), None),
            [IssueCode::MismatchedKeyType]
        );
        assert_eq!(
            lint_codes(
                &compile("ForAllValues:StringEquals", "aws:TagKeys"),
                Some(Effect::Allow)
            ),
            [IssueCode::ForAllValuesWithAllow]
        );
        assert_eq!(
            lint_codes(
                &compile("ForAnyValue:StringEquals", "aws:SourceAccount"),
                Some(Effect::Deny)
            ),
            [IssueCode::SetOperatorOnSingleValuedKey]
        );
        assert_eq!(lint_codes(&compile("Null", "aws:TagKeys"), None), []);
    }
}
