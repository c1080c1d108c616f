//! The IAM condition language: operators, typed values, and their evaluation.
//!
//! A `Condition` block is compiled once into [`Clause`]s (one per operator
//! and key) whose values are already typed: numbers parsed, dates turned
//! into timestamps, CIDRs into networks, ARNs and `*Like` values into
//! compiled patterns. Evaluation follows the IAM User Guide: clauses are
//! ANDed, the values of one key ORed, negated operators require that no
//! value match, an absent key makes a clause false except for negated,
//! `...IfExists` and `Null` operators, and `ForAllValues:` / `ForAnyValue:`
//! qualify each request value of a multivalued key.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;
use ipnet::IpNet;
use jiff::Timestamp;

use super::pattern::{ArnPattern, ArnPatternError, Pattern, PatternError, Syntax, VarSource};

/// The request values of one condition key.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> Values<'a> {
    pub fn is_empty(&self) -> bool {
        matches!(self, Values::Many([]))
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (one, many): (Option<&'a str>, &'a [String]) = match *self {
            Values::One(v) => (Some(v), &[]),
            Values::Many(m) => (None, m),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// The request context as conditions see it.
pub trait ConditionContext: VarSource {
    /// The values of `key` (case-insensitive), or `None` if absent.
    fn values(&self, key: &str) -> Option<Values<'_>>;

    /// True when AWS would put `key` in the request but the caller could not
    /// determine its value (an event source mapping's function, known only to
    /// Lambda's state). Such a key is neither present nor absent: a clause on
    /// it must not decide either way, see [`IfUnknown`].
    fn is_unknown(&self, _key: &str) -> bool {
        false
    }
}

/// How a clause on an unknown key is taken: as holding for a Deny (the deny
/// may apply, so it does) and as failing for an Allow (the grant may not
/// apply, so it does not). Either way the request fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfUnknown {
    Holds,
    Fails,
}

/// An operator without its qualifier and `IfExists` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseOperator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

impl BaseOperator {
    pub const ALL: [BaseOperator; 27] = [
        Self::StringEquals,
        Self::StringNotEquals,
        Self::StringEqualsIgnoreCase,
        Self::StringNotEqualsIgnoreCase,
        Self::StringLike,
        Self::StringNotLike,
        Self::NumericEquals,
        Self::NumericNotEquals,
        Self::NumericLessThan,
        Self::NumericLessThanEquals,
        Self::NumericGreaterThan,
        Self::NumericGreaterThanEquals,
        Self::DateEquals,
        Self::DateNotEquals,
        Self::DateLessThan,
        Self::DateLessThanEquals,
        Self::DateGreaterThan,
        Self::DateGreaterThanEquals,
        Self::Bool,
        Self::BinaryEquals,
        Self::IpAddress,
        Self::NotIpAddress,
        Self::ArnEquals,
        Self::ArnLike,
        Self::ArnNotEquals,
        Self::ArnNotLike,
        Self::Null,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::StringEquals => "StringEquals",
            Self::StringNotEquals => "StringNotEquals",
            Self::StringEqualsIgnoreCase => "StringEqualsIgnoreCase",
            Self::StringNotEqualsIgnoreCase => "StringNotEqualsIgnoreCase",
            Self::StringLike => "StringLike",
            Self::StringNotLike => "StringNotLike",
            Self::NumericEquals => "NumericEquals",
            Self::NumericNotEquals => "NumericNotEquals",
            Self::NumericLessThan => "NumericLessThan",
            Self::NumericLessThanEquals => "NumericLessThanEquals",
            Self::NumericGreaterThan => "NumericGreaterThan",
            Self::NumericGreaterThanEquals => "NumericGreaterThanEquals",
            Self::DateEquals => "DateEquals",
            Self::DateNotEquals => "DateNotEquals",
            Self::DateLessThan => "DateLessThan",
            Self::DateLessThanEquals => "DateLessThanEquals",
            Self::DateGreaterThan => "DateGreaterThan",
            Self::DateGreaterThanEquals => "DateGreaterThanEquals",
            Self::Bool => "Bool",
            Self::BinaryEquals => "BinaryEquals",
            Self::IpAddress => "IpAddress",
            Self::NotIpAddress => "NotIpAddress",
            Self::ArnEquals => "ArnEquals",
            Self::ArnLike => "ArnLike",
            Self::ArnNotEquals => "ArnNotEquals",
            Self::ArnNotLike => "ArnNotLike",
            Self::Null => "Null",
        }
    }

    /// Negated operators: true when no policy value matches, and when the key is absent.
    pub fn is_negated(self) -> bool {
        matches!(
            self,
            Self::StringNotEquals
                | Self::StringNotEqualsIgnoreCase
                | Self::StringNotLike
                | Self::NumericNotEquals
                | Self::DateNotEquals
                | Self::NotIpAddress
                | Self::ArnNotEquals
                | Self::ArnNotLike
        )
    }

    /// Whether `${...}` in values is a policy variable for this operator.
    pub fn takes_variables(self) -> bool {
        matches!(
            self,
            Self::StringEquals
                | Self::StringNotEquals
                | Self::StringEqualsIgnoreCase
                | Self::StringNotEqualsIgnoreCase
                | Self::StringLike
                | Self::StringNotLike
                | Self::ArnEquals
                | Self::ArnLike
                | Self::ArnNotEquals
                | Self::ArnNotLike
        )
    }
}

/// `ForAllValues:` / `ForAnyValue:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetQualifier {
    ForAllValues,
    ForAnyValue,
}

/// A full operator as written, e.g. `ForAnyValue:StringLikeIfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operator {
    pub qualifier: Option<SetQualifier>,
    pub base: BaseOperator,
    pub if_exists: bool,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.qualifier {
            Some(SetQualifier::ForAllValues) => f.write_str("ForAllValues:")?,
            Some(SetQualifier::ForAnyValue) => f.write_str("ForAnyValue:")?,
            None => {}
        }
        f.write_str(self.base.name())?;
        if self.if_exists {
            f.write_str("IfExists")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("unknown condition operator `{0}`")]
    UnknownOperator(String),
    #[error("`Null` cannot take `IfExists` or a set qualifier (`{0}`)")]
    BadNullOperator(String),
    #[error("the condition key `{0}` has no values")]
    NoValues(String),
    #[error("`{value}` is not a number, as `{operator}` needs")]
    NotNumber { operator: String, value: String },
    #[error("`{value}` is not a date (ISO 8601, such as 2026-01-01T00:00:00Z, or epoch seconds), as `{operator}` needs")]
    NotDate { operator: String, value: String },
    #[error("`{value}` is not `true` or `false`, as `{operator}` needs")]
    NotBool { operator: String, value: String },
    #[error("`{value}` is not base-64, as `BinaryEquals` needs")]
    NotBase64 { value: String },
    #[error("`{value}` is not an IP address or CIDR block, as `{operator}` needs")]
    NotCidr { operator: String, value: String },
    #[error("`{operator}` does not accept policy variables (`{value}`)")]
    VariableNotAllowed { operator: String, value: String },
    #[error("bad ARN value for `{operator}`: {source}")]
    BadArn {
        operator: String,
        #[source]
        source: ArnPatternError,
    },
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

impl Operator {
    pub fn parse(s: &str) -> Result<Self, ConditionError> {
        let unknown = || ConditionError::UnknownOperator(s.to_owned());
        let (qualifier, rest) = if let Some(r) = s.strip_prefix("ForAllValues:") {
            (Some(SetQualifier::ForAllValues), r)
        } else if let Some(r) = s.strip_prefix("ForAnyValue:") {
            (Some(SetQualifier::ForAnyValue), r)
        } else {
            (None, s)
        };
        let (base_name, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let base = BaseOperator::ALL
            .into_iter()
            .find(|op| op.name() == base_name)
            .ok_or_else(unknown)?;
        if base == BaseOperator::Null && (if_exists || qualifier.is_some()) {
            return Err(ConditionError::BadNullOperator(s.to_owned()));
        }
        Ok(Operator {
            qualifier,
            base,
            if_exists,
        })
    }
}

/// A parsed date: ISO 8601 (W3C profile) or epoch seconds.
pub fn parse_date(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !s[1..].contains('-')
    {
        let secs: i64 = s.parse().ok()?;
        return Timestamp::from_second(secs).ok();
    }
    if let Ok(ts) = Timestamp::from_str(s) {
        return Some(ts);
    }
    if let Ok(dt) = jiff::civil::DateTime::from_str(s) {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    if let Ok(d) = jiff::civil::Date::from_str(s) {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    None
}

/// A value for an `IpAddress` operator: a CIDR, or an address meaning /32 or /128.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    IpNet::from_str(s)
        .ok()
        .or_else(|| IpAddr::from_str(s).ok().map(IpNet::from))
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("nan") || s.contains(['i', 'I', 'n', 'N']) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The typed policy values of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum ClauseValues {
    Strings(Box<[Pattern]>),
    Numbers(Box<[f64]>),
    Dates(Box<[Timestamp]>),
    Bools(Box<[bool]>),
    Binary(Box<[Box<[u8]>]>),
    Cidrs(Box<[IpNet]>),
    Arns(Box<[ArnPattern]>),
}

/// One operator applied to one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub operator: Operator,
    /// The key as written (names are case-insensitive).
    pub key: Box<str>,
    pub values: ClauseValues,
}

impl Clause {
    /// Compiles a clause; `variables` is false for policies whose Version
    /// makes `${...}` literal text.
    pub fn compile(
        operator: Operator,
        key: &str,
        raw: &[String],
        variables: bool,
    ) -> Result<Self, ConditionError> {
        if raw.is_empty() {
            return Err(ConditionError::NoValues(key.to_owned()));
        }
        let op = operator.base;
        let op_name = || operator.to_string();
        let no_vars = |v: &String| -> Result<(), ConditionError> {
            if variables && v.contains("${") {
                Err(ConditionError::VariableNotAllowed {
                    operator: op_name(),
                    value: v.clone(),
                })
            } else {
                Ok(())
            }
        };
        use BaseOperator as B;
        let values = match op {
            B::StringEquals
            | B::StringNotEquals
            | B::StringEqualsIgnoreCase
            | B::StringNotEqualsIgnoreCase => {
                let syntax = Syntax {
                    wildcards: false,
                    variables,
                };
                ClauseValues::Strings(
                    raw.iter()
                        .map(|v| Pattern::parse(v, syntax))
                        .collect::<Result<_, _>>()?,
                )
            }
            B::StringLike | B::StringNotLike => {
                let syntax = Syntax {
                    wildcards: true,
                    variables,
                };
                ClauseValues::Strings(
                    raw.iter()
                        .map(|v| Pattern::parse(v, syntax))
                        .collect::<Result<_, _>>()?,
                )
            }
            B::NumericEquals
            | B::NumericNotEquals
            | B::NumericLessThan
            | B::NumericLessThanEquals
            | B::NumericGreaterThan
            | B::NumericGreaterThanEquals => ClauseValues::Numbers(
                raw.iter()
                    .map(|v| {
                        no_vars(v)?;
                        parse_number(v).ok_or_else(|| ConditionError::NotNumber {
                            operator: op_name(),
                            value: v.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            B::DateEquals
            | B::DateNotEquals
            | B::DateLessThan
            | B::DateLessThanEquals
            | B::DateGreaterThan
            | B::DateGreaterThanEquals => ClauseValues::Dates(
                raw.iter()
                    .map(|v| {
                        no_vars(v)?;
                        parse_date(v).ok_or_else(|| ConditionError::NotDate {
                            operator: op_name(),
                            value: v.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            B::Bool | B::Null => ClauseValues::Bools(
                raw.iter()
                    .map(|v| {
                        no_vars(v)?;
                        parse_bool(v).ok_or_else(|| ConditionError::NotBool {
                            operator: op_name(),
                            value: v.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            B::BinaryEquals => ClauseValues::Binary(
                raw.iter()
                    .map(|v| {
                        no_vars(v)?;
                        base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .map(Vec::into_boxed_slice)
                            .map_err(|_| ConditionError::NotBase64 { value: v.clone() })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            B::IpAddress | B::NotIpAddress => ClauseValues::Cidrs(
                raw.iter()
                    .map(|v| {
                        no_vars(v)?;
                        parse_cidr(v).ok_or_else(|| ConditionError::NotCidr {
                            operator: op_name(),
                            value: v.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            B::ArnEquals | B::ArnLike | B::ArnNotEquals | B::ArnNotLike => ClauseValues::Arns(
                raw.iter()
                    .map(|v| {
                        ArnPattern::parse(v, variables).map_err(|source| ConditionError::BadArn {
                            operator: op_name(),
                            source,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Clause {
            operator,
            key: key.into(),
            values,
        })
    }

    /// Does one request value match any policy value (the operator's positive form)?
    fn any_value_matches(&self, v: &str, ctx: &dyn ConditionContext) -> bool {
        use BaseOperator as B;
        let op = self.operator.base;
        match &self.values {
            ClauseValues::Strings(pats) => match op {
                B::StringEqualsIgnoreCase | B::StringNotEqualsIgnoreCase => {
                    pats.iter().any(|p| p.matches_ignore_case(v, ctx))
                }
                _ => pats.iter().any(|p| p.matches(v, ctx)),
            },
            ClauseValues::Numbers(nums) => {
                let Some(x) = parse_number(v) else {
                    return false;
                };
                nums.iter().any(|&n| match op {
                    B::NumericEquals | B::NumericNotEquals => x == n,
                    B::NumericLessThan => x < n,
                    B::NumericLessThanEquals => x <= n,
                    B::NumericGreaterThan => x > n,
                    _ => x >= n,
                })
            }
            ClauseValues::Dates(dates) => {
                let Some(x) = parse_date(v) else {
                    return false;
                };
                dates.iter().any(|&d| match op {
                    B::DateEquals | B::DateNotEquals => x == d,
                    B::DateLessThan => x < d,
                    B::DateLessThanEquals => x <= d,
                    B::DateGreaterThan => x > d,
                    _ => x >= d,
                })
            }
            ClauseValues::Bools(bools) => match parse_bool(v) {
                Some(x) => bools.contains(&x),
                None => false,
            },
            ClauseValues::Binary(blobs) => {
                let mut buf = [0u8; 1024];
                match base64::engine::general_purpose::STANDARD.decode_slice(v, &mut buf) {
                    Ok(n) => blobs.iter().any(|b| Some(b.as_ref()) == buf.get(..n)),
                    Err(_) => false,
                }
            }
            ClauseValues::Cidrs(nets) => match IpAddr::from_str(v.trim()) {
                Ok(ip) => nets.iter().any(|n| n.contains(&ip)),
                Err(_) => false,
            },
            ClauseValues::Arns(pats) => pats.iter().any(|p| p.matches(v, ctx)),
        }
    }

    /// Evaluates the clause against the request.
    pub fn evaluate(&self, ctx: &dyn ConditionContext) -> bool {
        let values = ctx.values(&self.key);
        if self.operator.base == BaseOperator::Null {
            let present = values.is_some_and(|v| !v.is_empty());
            return match &self.values {
                ClauseValues::Bools(b) => b.iter().any(|&want_null| want_null != present),
                _ => false,
            };
        }
        let negated = self.operator.base.is_negated();
        // For one request value: does it satisfy the operator (negation applied)?
        let satisfies = |v: &str| self.any_value_matches(v, ctx) != negated;
        match (self.operator.qualifier, values) {
            (None, None) => self.operator.if_exists || negated,
            (None, Some(vals)) if vals.is_empty() => self.operator.if_exists || negated,
            (None, Some(vals)) => {
                let any = vals.iter().any(|v| self.any_value_matches(v, ctx));
                any != negated
            }
            (Some(SetQualifier::ForAllValues), None) => true,
            (Some(SetQualifier::ForAllValues), Some(vals)) => vals.iter().all(satisfies),
            (Some(SetQualifier::ForAnyValue), None) => self.operator.if_exists,
            (Some(SetQualifier::ForAnyValue), Some(vals)) if vals.is_empty() => {
                self.operator.if_exists
            }
            (Some(SetQualifier::ForAnyValue), Some(vals)) => vals.iter().any(satisfies),
        }
    }
}

/// Why a condition was false: the first clause that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClauseFailure {
    pub clause: usize,
    /// The clause's key was absent from the request.
    pub key_absent: bool,
    /// The clause's key is one the request could not determine.
    pub key_unknown: bool,
}

/// A compiled `Condition` element: its clauses, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    pub clauses: Box<[Clause]>,
}

impl Condition {
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    pub fn evaluate(
        &self,
        ctx: &dyn ConditionContext,
        if_unknown: IfUnknown,
    ) -> Result<(), ClauseFailure> {
        for (i, clause) in self.clauses.iter().enumerate() {
            if ctx.is_unknown(&clause.key) {
                match if_unknown {
                    IfUnknown::Holds => continue,
                    IfUnknown::Fails => {
                        return Err(ClauseFailure {
                            clause: i,
                            key_absent: false,
                            key_unknown: true,
                        })
                    }
                }
            }
            if !clause.evaluate(ctx) {
                return Err(ClauseFailure {
                    clause: i,
                    key_absent: ctx.values(&clause.key).is_none(),
                    key_unknown: false,
                });
            }
        }
        Ok(())
    }

    /// Keys the clauses read that the request lacks (for explanations).
    pub fn missing_keys<'c>(
        &'c self,
        ctx: &'c dyn ConditionContext,
    ) -> impl Iterator<Item = &'c str> + 'c {
        self.clauses
            .iter()
            .filter(|c| c.operator.base != BaseOperator::Null)
            .filter(move |c| ctx.values(&c.key).is_none())
            .map(|c| c.key.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny context over a fixed list of keys.
    pub(crate) struct Ctx(pub Vec<(&'static str, Vec<String>)>);

    impl VarSource for Ctx {
        fn var(&self, key: &str) -> Option<&str> {
            match self.values(key)? {
                Values::One(v) => Some(v),
                Values::Many([v]) => Some(v),
                Values::Many(_) => None,
            }
        }
    }

    impl ConditionContext for Ctx {
        fn values(&self, key: &str) -> Option<Values<'_>> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| Values::Many(v))
        }
    }

    fn ctx(pairs: &[(&'static str, &[&str])]) -> Ctx {
        Ctx(pairs
            .iter()
            .map(|(k, v)| (*k, v.iter().map(|s| s.to_string()).collect()))
            .collect())
    }

    fn eval(op: &str, key: &str, vals: &[&str], c: &Ctx) -> bool {
        let raw: Vec<String> = vals.iter().map(|s| s.to_string()).collect();
        Clause::compile(Operator::parse(op).unwrap(), key, &raw, true)
            .unwrap()
            .evaluate(c)
    }

    #[test]
    fn operator_names_round_trip() {
        for base in BaseOperator::ALL {
            let op = Operator::parse(base.name()).unwrap();
            assert_eq!(op.to_string(), base.name());
        }
        let op = Operator::parse("ForAnyValue:StringLikeIfExists").unwrap();
        assert_eq!(op.qualifier, Some(SetQualifier::ForAnyValue));
        assert!(op.if_exists);
        assert!(Operator::parse("StringEqual").is_err());
        assert!(Operator::parse("NullIfExists").is_err());
        assert!(Operator::parse("ForAllValues:Null").is_err());
    }

    #[test]
    fn string_operators() {
        let c = ctx(&[("aws:username", &["alice"])]);
        assert!(eval("StringEquals", "AWS:UserName", &["bob", "alice"], &c));
        assert!(!eval("StringEquals", "aws:username", &["Alice"], &c));
        assert!(eval(
            "StringEqualsIgnoreCase",
            "aws:username",
            &["ALICE"],
            &c
        ));
        assert!(!eval(
            "StringNotEquals",
            "aws:username",
            &["bob", "alice"],
            &c
        ));
        assert!(eval(
            "StringNotEquals",
            "aws:username",
            &["bob", "carol"],
            &c
        ));
        assert!(eval("StringLike", "aws:username", &["a*"], &c));
        assert!(eval("StringNotLike", "aws:username", &["b*"], &c));
        assert!(!eval(
            "StringNotEqualsIgnoreCase",
            "aws:username",
            &["ALICE"],
            &c
        ));
    }

    #[test]
    fn absent_keys() {
        let c = ctx(&[]);
        assert!(!eval("StringEquals", "k", &["v"], &c));
        assert!(eval("StringNotEquals", "k", &["v"], &c));
        assert!(eval("StringEqualsIfExists", "k", &["v"], &c));
        assert!(eval("NumericLessThanIfExists", "k", &["1"], &c));
        assert!(eval("Null", "k", &["true"], &c));
        assert!(!eval("Null", "k", &["false"], &c));
        assert!(eval("ForAllValues:StringEquals", "k", &["v"], &c));
        assert!(!eval("ForAnyValue:StringEquals", "k", &["v"], &c));
    }

    #[test]
    fn numeric_date_bool_binary_ip() {
        let c = ctx(&[
            ("n", &["5"]),
            ("d", &["2026-06-01T12:00:00Z"]),
            ("e", &["1700000000"]),
            ("b", &["true"]),
            ("bin", &["aGVsbG8="]),
            ("ip", &["10.1.2.3"]),
            ("ip6", &["2001:db8::1"]),
        ]);
        assert!(eval("NumericEquals", "n", &["5.0"], &c));
        assert!(eval("NumericLessThan", "n", &["6"], &c));
        assert!(!eval("NumericLessThan", "n", &["5"], &c));
        assert!(eval("NumericLessThanEquals", "n", &["5"], &c));
        assert!(eval("NumericGreaterThan", "n", &["4.5"], &c));
        assert!(eval("NumericGreaterThanEquals", "n", &["5"], &c));
        assert!(eval("NumericNotEquals", "n", &["4"], &c));
        assert!(eval("DateGreaterThan", "d", &["2026-01-01"], &c));
        assert!(eval("DateLessThan", "d", &["2026-06-01T12:00:01Z"], &c));
        assert!(eval("DateEquals", "d", &["1780315200"], &c));
        assert!(eval(
            "DateLessThanEquals",
            "e",
            &["2023-11-14T22:13:20Z"],
            &c
        ));
        assert!(eval(
            "DateGreaterThanEquals",
            "e",
            &["2023-11-14T22:13:20Z"],
            &c
        ));
        assert!(eval("DateNotEquals", "e", &["2023-11-14"], &c));
        assert!(eval("Bool", "b", &["true"], &c));
        assert!(!eval("Bool", "b", &["false"], &c));
        assert!(eval("BinaryEquals", "bin", &["aGVsbG8="], &c));
        assert!(eval("IpAddress", "ip", &["10.0.0.0/8"], &c));
        assert!(eval("IpAddress", "ip", &["10.1.2.3"], &c));
        assert!(!eval("IpAddress", "ip", &["192.168.0.0/16"], &c));
        assert!(eval("NotIpAddress", "ip", &["192.168.0.0/16"], &c));
        assert!(eval("IpAddress", "ip6", &["2001:db8::/32"], &c));
    }

    #[test]
    fn arn_operators() {
        let c = ctx(&[("aws:SourceArn", &["arn:aws:s3:::ExampleBucket"])]);
        assert!(eval(
            "ArnLike",
            "aws:sourcearn",
            &["arn:aws:s3:::Example*"],
            &c
        ));
        assert!(eval(
            "ArnEquals",
            "aws:sourcearn",
            &["arn:aws:s3:::ExampleBucket"],
            &c
        ));
        assert!(!eval(
            "ArnEquals",
            "aws:sourcearn",
            &["arn:aws:s3:::examplebucket"],
            &c
        ));
        assert!(eval(
            "ArnNotLike",
            "aws:sourcearn",
            &["arn:aws:s3:::other*"],
            &c
        ));
        assert!(!eval(
            "ArnNotEquals",
            "aws:sourcearn",
            &["arn:aws:s3:::ExampleBucket"],
            &c
        ));
    }

    #[test]
    fn set_qualifiers() {
        let c = ctx(&[("aws:TagKeys", &["env", "team"]), ("empty", &[])]);
        assert!(eval(
            "ForAllValues:StringEquals",
            "aws:TagKeys",
            &["env", "team", "x"],
            &c
        ));
        assert!(!eval(
            "ForAllValues:StringEquals",
            "aws:TagKeys",
            &["env"],
            &c
        ));
        assert!(eval(
            "ForAnyValue:StringEquals",
            "aws:TagKeys",
            &["team"],
            &c
        ));
        assert!(!eval("ForAnyValue:StringEquals", "aws:TagKeys", &["x"], &c));
        // Negated under a qualifier: per value "matches none of the policy values".
        assert!(eval(
            "ForAllValues:StringNotEquals",
            "aws:TagKeys",
            &["x"],
            &c
        ));
        assert!(!eval(
            "ForAllValues:StringNotEquals",
            "aws:TagKeys",
            &["env"],
            &c
        ));
        assert!(eval(
            "ForAnyValue:StringNotEquals",
            "aws:TagKeys",
            &["env"],
            &c
        ));
        assert!(eval("ForAllValues:StringEquals", "empty", &["x"], &c));
        assert!(!eval("ForAnyValue:StringEquals", "empty", &["x"], &c));
    }

    #[test]
    fn typed_value_errors() {
        let bad = |op: &str, v: &str| {
            Clause::compile(Operator::parse(op).unwrap(), "k", &[v.to_string()], true).unwrap_err()
        };
        assert!(matches!(
            bad("DateGreaterThan", "yesterday"),
            ConditionError::NotDate { .. }
        ));
        assert!(matches!(
            bad("NumericEquals", "five"),
            ConditionError::NotNumber { .. }
        ));
        assert!(matches!(
            bad("IpAddress", "10.0.0.0/33"),
            ConditionError::NotCidr { .. }
        ));
        assert!(matches!(bad("Bool", "yes"), ConditionError::NotBool { .. }));
        assert!(matches!(
            bad("BinaryEquals", "!!"),
            ConditionError::NotBase64 { .. }
        ));
        assert!(matches!(
            bad("ArnLike", "bucket"),
            ConditionError::BadArn { .. }
        ));
        assert!(matches!(
            bad("Bool", "${aws:SecureTransport}"),
            ConditionError::VariableNotAllowed { .. }
        ));
        assert!(matches!(
            Clause::compile(Operator::parse("StringEquals").unwrap(), "k", &[], true),
            Err(ConditionError::NoValues(_))
        ));
    }

    #[test]
    fn variables_in_values() {
        let c = ctx(&[
            ("aws:username", &["alice"]),
            ("s3:prefix", &["home/alice/x"]),
        ]);
        assert!(eval(
            "StringLike",
            "s3:prefix",
            &["home/${aws:username}/*"],
            &c
        ));
        assert!(!eval(
            "StringEquals",
            "s3:prefix",
            &["home/${aws:userid}/x"],
            &c
        ));
        assert!(eval(
            "StringNotEquals",
            "s3:prefix",
            &["home/${aws:userid}/x"],
            &c
        ));
    }

    #[test]
    fn dates_parse_in_all_documented_forms() {
        for s in [
            "2026-01-01",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00Z",
            "2026-01-01T01:00:00+01:00",
            "1767225600",
        ] {
            assert_eq!(
                parse_date(s).map(|t| t.as_second()),
                Some(1767225600),
                "{s}"
            );
        }
        assert!(parse_date("2026-13-01").is_none());
    }
}
