//! Matching the caller against a resource policy's `Principal` / `NotPrincipal`.
//!
//! Principal ARNs are compiled into (account, name) entries. IAM user and
//! role names are unique within an account whatever their path, and an
//! assumed-role session ARN carries only the role's name, so a role entry
//! `arn:aws:iam::A:role/path/app` matches every session
//! `arn:aws:sts::A:assumed-role/app/...` without string building.

use super::request::Principal;
use super::snapshot::Entity;
use crate::policy::arn::Arn;
use crate::policy::{PrincipalElement, PrincipalList, PrincipalMatch, PrincipalSpec};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Account(Box<str>),
    User {
        account: Box<str>,
        name: Box<str>,
    },
    Role {
        account: Box<str>,
        name: Box<str>,
    },
    Session {
        account: Box<str>,
        role: Box<str>,
        session: Box<str>,
    },
    FederatedUser {
        account: Box<str>,
        name: Box<str>,
    },
    UniqueId(Box<str>),
    /// A service principal or federated identity provider name.
    Named(Box<str>),
}

/// A compiled `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalMatcher {
    negated: bool,
    everyone: bool,
    entries: Box<[Entry]>,
}

fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl PrincipalMatcher {
    pub fn compile(element: &PrincipalElement) -> Self {
        let (everyone, entries) = match &element.spec {
            PrincipalSpec::Everyone => (true, Vec::new()),
            PrincipalSpec::Listed(list) => (false, compile_list(list)),
        };
        PrincipalMatcher {
            negated: element.negated,
            everyone,
            entries: entries.into_boxed_slice(),
        }
    }

    fn entry_match(&self, facet: &Facet<'_>) -> Option<PrincipalMatch> {
        if self.everyone {
            return Some(PrincipalMatch::Direct);
        }
        self.entries.iter().find_map(|e| {
            let hit = match (e, facet) {
                (Entry::Account(a), Facet::Account(b)) => a.as_ref() == *b,
                (
                    Entry::User { account, name },
                    Facet::User {
                        account: a,
                        name: n,
                    },
                ) => account.as_ref() == *a && name.as_ref() == *n,
                (
                    Entry::Role { account, name },
                    Facet::Role {
                        account: a,
                        name: n,
                    },
                ) => account.as_ref() == *a && name.as_ref() == *n,
                (
                    Entry::Session {
                        account,
                        role,
                        session,
                    },
                    Facet::Session {
                        account: a,
                        role: r,
                        session: s,
                    },
                ) => account.as_ref() == *a && role.as_ref() == *r && session.as_ref() == *s,
                (
                    Entry::FederatedUser { account, name },
                    Facet::FederatedUser {
                        account: a,
                        name: n,
                    },
                ) => account.as_ref() == *a && name.as_ref() == *n,
                (Entry::UniqueId(id), Facet::UniqueId(u)) => id.as_ref() == *u,
                (Entry::Named(n), Facet::Named(m)) => n.eq_ignore_ascii_case(m),
                _ => false,
            };
            hit.then_some(facet.strength())
        })
    }

    fn level_match(&self, level: &Level<'_>) -> Option<PrincipalMatch> {
        self.entry_match(&level.facet)
            .or_else(|| level.alt.as_ref().and_then(|alt| self.entry_match(alt)))
            .map(|_| level.facet.strength())
    }

    /// Whether the statement applies to the caller, and how strongly it names it.
    ///
    /// `NotPrincipal` applies unless every identity of the caller (account,
    /// role, session...) is listed, since AWS may check any of them; and it
    /// always applies to a caller with a permissions boundary (IAM User Guide,
    /// NotPrincipal).
    pub fn matches(&self, caller: &Caller<'_>) -> Option<PrincipalMatch> {
        let levels = caller.levels();
        let levels = levels.iter().flatten();
        if self.negated {
            let has_boundary = caller.entity.is_some_and(|e| e.boundary.is_some());
            let exempt = !has_boundary && levels.clone().all(|l| self.level_match(l).is_some());
            return (!exempt).then_some(PrincipalMatch::Direct);
        }
        levels.filter_map(|l| self.level_match(l)).max()
    }
}

fn compile_list(list: &PrincipalList) -> Vec<Entry> {
    let mut out = Vec::new();
    out.extend(list.accounts.iter().map(|a| Entry::Account(a.clone())));
    out.extend(list.unique_ids.iter().map(|a| Entry::UniqueId(a.clone())));
    out.extend(list.services.iter().map(|a| Entry::Named(a.clone())));
    out.extend(list.federated.iter().map(|a| Entry::Named(a.clone())));
    // INVARIANT: the parser files under `arns` only ARNs that parse, of an
    // IAM user or role, an assumed-role session or a federated user, in a
    // 12-digit account. One without a name part (`...:user`,
    // `...:assumed-role/R`) can name no caller, so it is compiled to
    // nothing: matching nobody is what it means, for Allow and Deny alike.
    for text in &list.arns {
        let Ok(arn) = Arn::parse(text) else { continue };
        let account: Box<str> = arn.account.into();
        let Some((kind, rest)) = arn.resource.split_once('/') else {
            continue;
        };
        let entry = match (arn.service, kind) {
            ("iam", "user") => Entry::User {
                account,
                name: last_segment(rest).into(),
            },
            ("iam", "role") => Entry::Role {
                account,
                name: last_segment(rest).into(),
            },
            ("sts", "assumed-role") => match rest.split_once('/') {
                Some((role, session)) => Entry::Session {
                    account,
                    role: role.into(),
                    session: session.into(),
                },
                None => continue,
            },
            ("sts", "federated-user") => Entry::FederatedUser {
                account,
                name: rest.into(),
            },
            _ => continue,
        };
        out.push(entry);
    }
    out
}

/// One identity of the caller that a principal entry can name.
#[derive(Debug, Clone, Copy)]
enum Facet<'a> {
    Account(&'a str),
    User {
        account: &'a str,
        name: &'a str,
    },
    Role {
        account: &'a str,
        name: &'a str,
    },
    Session {
        account: &'a str,
        role: &'a str,
        session: &'a str,
    },
    FederatedUser {
        account: &'a str,
        name: &'a str,
    },
    UniqueId(&'a str),
    Named(&'a str),
    /// Anonymous callers: only `*` names them.
    Anonymous,
}

impl Facet<'_> {
    fn strength(&self) -> PrincipalMatch {
        match self {
            Facet::Account(_) => PrincipalMatch::Account,
            Facet::Role { .. } => PrincipalMatch::Role,
            _ => PrincipalMatch::Direct,
        }
    }
}

/// The caller, resolved against the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: Principal<'a>,
    /// The user or role in the store, if known.
    pub entity: Option<&'a Entity>,
}

/// One identity of the caller, with the unique-id spelling of it, if known.
#[derive(Debug, Clone, Copy)]
struct Level<'a> {
    facet: Facet<'a>,
    alt: Option<Facet<'a>>,
}

impl<'a> Caller<'a> {
    /// Every identity the caller has, from the account down to the session.
    fn levels(&self) -> [Option<Level<'a>>; 3] {
        let id = self
            .entity
            .and_then(|e| e.id.as_deref())
            .map(Facet::UniqueId);
        let level = |facet| Some(Level { facet, alt: None });
        let with_id = |facet| Some(Level { facet, alt: id });
        match self.principal {
            Principal::Anonymous => [level(Facet::Anonymous), None, None],
            Principal::Service { name } => [level(Facet::Named(name)), None, None],
            Principal::Root { account } => [level(Facet::Account(account)), None, None],
            Principal::User { account, name, .. } => [
                level(Facet::Account(account)),
                with_id(Facet::User { account, name }),
                None,
            ],
            Principal::Role { account, name, .. } => [
                level(Facet::Account(account)),
                with_id(Facet::Role { account, name }),
                None,
            ],
            Principal::AssumedRole {
                account,
                role,
                session,
                ..
            } => [
                level(Facet::Account(account)),
                with_id(Facet::Role {
                    account,
                    name: role,
                }),
                level(Facet::Session {
                    account,
                    role,
                    session,
                }),
            ],
            Principal::FederatedUser { account, name, .. } => [
                level(Facet::Account(account)),
                level(Facet::FederatedUser { account, name }),
                None,
            ],
        }
    }
}
