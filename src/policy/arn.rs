//! Amazon Resource Names: `arn:partition:service:region:account:resource`.
//!
//! An [`Arn`] borrows the five fixed components and the resource (everything
//! after the fifth colon, which may itself contain colons, as
//! `function:name:alias` does). Parsing never allocates.

use std::fmt;

use crate::finding::echo;

/// Why a string is not an ARN. Each holds the text, and shows it through
/// [`echo`]: escaped and, when long, cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("`{}` does not start with `arn:`", echo(.0))]
    NoPrefix(String),
    #[error("`{}` has fewer than six colon-separated components (arn:partition:service:region:account:resource)", echo(.0))]
    TooFewComponents(String),
    #[error("`{}` has an empty partition", echo(.0))]
    EmptyPartition(String),
    #[error("`{}` has an empty service", echo(.0))]
    EmptyService(String),
    #[error("`{}` has an empty resource", echo(.0))]
    EmptyResource(String),
    #[error("`{}` contains a control character; no AWS resource or principal is named so", echo(.0))]
    ControlCharacter(String),
}

/// True when `s` holds a control character (C0, DEL or C1): no ARN, account
/// id or principal name has one, so it can only be a mistake or a forgery.
pub fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f) || (!s.is_ascii() && s.chars().any(char::is_control))
}

/// A parsed ARN, borrowing from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(s: &'a str) -> Result<Self, ArnError> {
        let Some(["arn", partition, service, region, account, resource]) = split_arn(s) else {
            return Err(if s.starts_with("arn:") {
                ArnError::TooFewComponents(s.to_owned())
            } else {
                ArnError::NoPrefix(s.to_owned())
            });
        };
        if partition.is_empty() {
            return Err(ArnError::EmptyPartition(s.to_owned()));
        }
        if service.is_empty() {
            return Err(ArnError::EmptyService(s.to_owned()));
        }
        if resource.is_empty() {
            return Err(ArnError::EmptyResource(s.to_owned()));
        }
        if has_control(s) {
            return Err(ArnError::ControlCharacter(s.to_owned()));
        }
        Ok(Arn {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

impl fmt::Display for Arn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

/// Splits `s` at its first five colons: the prefix, partition, service,
/// region, account and resource of an ARN; `None` with fewer colons.
///
/// A byte loop: ARNs are short, and `str::splitn` costs a searcher per
/// component (it shows when a store holds a million of them).
pub fn split_arn(s: &str) -> Option<[&str; 6]> {
    let mut parts = [""; 6];
    let mut start = 0;
    let mut n = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b':' {
            *parts.get_mut(n)? = s.get(start..i)?;
            start = i + 1;
            n += 1;
            if n == 5 {
                parts[5] = s.get(start..)?;
                return Some(parts);
            }
        }
    }
    None
}

/// True for a 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lambda_arns_with_qualifiers() {
        let a = Arn::parse("arn:aws:lambda:us-east-1:111122223333:function:f:prod").unwrap();
        assert_eq!(a.service, "lambda");
        assert_eq!(a.account, "111122223333");
        assert_eq!(a.resource, "function:f:prod");
        assert_eq!(
            a.to_string(),
            "arn:aws:lambda:us-east-1:111122223333:function:f:prod"
        );
    }

    #[test]
    fn parses_arns_with_empty_region_and_account() {
        let a = Arn::parse("arn:aws:s3:::bucket/key").unwrap();
        assert_eq!((a.region, a.account, a.resource), ("", "", "bucket/key"));
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            Arn::parse("aws:lambda"),
            Err(ArnError::NoPrefix(_))
        ));
        assert!(matches!(
            Arn::parse("arn:aws:lambda:us-east-1:1"),
            Err(ArnError::TooFewComponents(_))
        ));
        assert!(matches!(
            Arn::parse("arn::s3:::b"),
            Err(ArnError::EmptyPartition(_))
        ));
        assert!(matches!(
            Arn::parse("arn:aws::::b"),
            Err(ArnError::EmptyService(_))
        ));
        assert!(matches!(
            Arn::parse("arn:aws:s3:::"),
            Err(ArnError::EmptyResource(_))
        ));
    }

    #[test]
    fn rejects_control_characters_anywhere() {
        for bad in [
            "arn:aws:iam::111122223333:user/al\u{0}ice",
            "arn:aws:iam::111122223333:user/alice\n",
            "arn:aws\t:s3:::bucket",
            "arn:aws:s3:::bucket/\u{7f}",
            "arn:aws:s3:::bucket/\u{85}key",
        ] {
            let e = Arn::parse(bad).unwrap_err();
            assert!(matches!(e, ArnError::ControlCharacter(_)), "{bad:?}: {e:?}");
            // The message shows the text escaped, on one line.
            let msg = e.to_string();
            assert!(!msg.contains(char::is_control), "{msg:?}");
        }
        // Other characters beyond ASCII are left to the resource's service.
        assert!(Arn::parse("arn:aws:s3:::bucket/caf\u{e9}").is_ok());
    }

    #[test]
    fn errors_cut_long_text_short() {
        let long = format!("arn:aws:s3:::{}\u{0}", "b".repeat(1 << 20));
        let msg = Arn::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 400, "{} bytes", msg.len());
        assert!(msg.contains(&format!("…({} bytes)", long.len())), "{msg}");
    }

    #[test]
    fn account_ids() {
        assert!(is_account_id("111122223333"));
        assert!(!is_account_id("11112222333"));
        assert!(!is_account_id("11112222333a"));
    }
}
