//! Bench and test tooling, **not part of iamd's API**: a deterministic
//! generator of realistic synthetic stores, for the benchmarks, the load
//! scripts (`iamd gen-store`, a hidden subcommand) and a few tests.
//!
//! Nothing in iamd's serving path uses this module; it is public only so
//! that benches, examples and the peer comparison (other crates) can reach
//! it, and it may change with them at any time.
//!
//! Each account gets functions whose policies look like what `AddPermission`
//! writes (service principals with aws:SourceArn / aws:SourceAccount,
//! cross-account grants, alias policies), users in groups with managed and
//! inline policies using wildcards and conditions, a few explicit denies and
//! permissions boundaries, roles with trust policies, and an organization
//! with SCPs. Fixed probe identities in the first two accounts let benchmarks
//! ask the same six questions at every store size.
//!
//! The documents are built as the serde types of [`doc`] and written by
//! `serde_json`; the same parameters and seed give the same bytes.

mod doc;

use crate::engine::ContextEntry;
use doc::{
    AccountDetails, Attached, Boundary, Condition, FunctionPolicyFile, Group, InlinePolicy,
    ManagedPolicy, Organization, Policy, PolicyVersion, Principal, Role, Scp, Statement, Tag, User,
    Values,
};

/// Store size parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenParams {
    pub accounts: usize,
    pub functions_per_account: usize,
    /// Users per account.
    pub principals: usize,
    pub seed: u64,
}

impl GenParams {
    /// Parameters that give about `statements` statements.
    pub fn for_statements(statements: usize, seed: u64) -> Self {
        // Calibrated on generated stores: about 1.6 statements per function
        // and 2.5 per user (roles included), plus a few hundred per account.
        let accounts = (statements / 10_000).clamp(2, 100);
        let per_account = statements / accounts;
        GenParams {
            accounts,
            functions_per_account: (per_account * 3 / 10).max(4),
            principals: (per_account * 34 / 100).max(4),
            seed,
        }
    }
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The account id of account `i`.
pub fn account_id(i: usize) -> String {
    format!("{:012}", 100_000_000_000u64 + i as u64)
}

/// The region every generated function lives in.
pub const REGION: &str = "us-east-1";

/// One of the questions the benchmarks ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: &'static str,
    pub principal: String,
    pub action: &'static str,
    pub resource: String,
    pub context: Vec<(&'static str, String)>,
    /// `Allow`, `ExplicitDeny` or `ImplicitDeny`.
    pub expect: &'static str,
}

impl Probe {
    /// The probe's request context, as [`Request::new`](crate::engine::Request::new) takes it.
    pub fn context_entries(&self) -> Vec<ContextEntry> {
        self.context
            .iter()
            .map(|(k, v)| ContextEntry::new(*k, [v]))
            .collect()
    }
}

/// The questions the benchmarks ask, valid for every generated store.
pub fn probe_requests() -> Vec<Probe> {
    let a0 = account_id(0);
    let a1 = account_id(1);
    let f = |a: &str, name: &str| format!("arn:aws:lambda:{REGION}:{a}:function:{name}");
    let alice = format!("arn:aws:iam::{a0}:user/probe-alice");
    let probe = |name, principal: &str, action, resource, context, expect| Probe {
        name,
        principal: principal.to_owned(),
        action,
        resource,
        context,
        expect,
    };
    vec![
        probe(
            "allow",
            &alice,
            "lambda:InvokeFunction",
            f(&a0, "f-1"),
            vec![],
            "Allow",
        ),
        probe(
            "explicit_deny",
            &alice,
            "lambda:DeleteFunction",
            f(&a0, "f-1:prod"),
            vec![],
            "ExplicitDeny",
        ),
        probe(
            "implicit_deny",
            &alice,
            "lambda:GetPolicy",
            f(&a0, "f-1"),
            vec![],
            "ImplicitDeny",
        ),
        probe(
            "cross_account",
            &format!("arn:aws:iam::{a1}:user/probe-partner"),
            "lambda:InvokeFunction",
            f(&a0, "f-0"),
            vec![],
            "Allow",
        ),
        probe(
            "conditions",
            "s3.amazonaws.com",
            "lambda:InvokeFunction",
            f(&a0, "f-0"),
            vec![
                ("aws:SourceAccount", a0.clone()),
                ("aws:SourceArn", format!("arn:aws:s3:::bucket-{a0}-0")),
                ("aws:SourceIp", "10.20.30.40".to_owned()),
                ("aws:SecureTransport", "true".to_owned()),
            ],
            "Allow",
        ),
        probe(
            "policy_variable",
            &format!("arn:aws:iam::{a0}:user/probe-var"),
            "lambda:UpdateFunctionCode",
            f(&a0, "probe-var-tools"),
            vec![],
            "Allow",
        ),
    ]
}

/// An identity-based statement (no principal) with a `Sid`.
fn identity(
    sid: &'static str,
    effect: &'static str,
    action: Values,
    resource: Values,
) -> Statement {
    Statement {
        sid: Some(sid.into()),
        effect,
        principal: None,
        action,
        resource: Some(resource),
        condition: None,
    }
}

/// A resource-based statement of a function policy, as `AddPermission` writes it.
fn grant(sid: String, principal: Principal, resource: &str) -> Statement {
    Statement {
        sid: Some(sid.into()),
        effect: "Allow",
        principal: Some(principal),
        action: Values::one("lambda:InvokeFunction"),
        resource: Some(Values::one(resource)),
        condition: None,
    }
}

/// A generated document as compact JSON.
#[expect(
    clippy::expect_used,
    reason = "the types of `doc` hold only strings, booleans, sequences and string-keyed maps, which serialize without fail"
)]
fn json(doc: &impl serde::Serialize) -> String {
    serde_json::to_string(doc).expect("a generated document serializes")
}

/// Generates the store's files: `(relative path, JSON text)`.
pub fn generate(p: &GenParams) -> Vec<(String, String)> {
    let mut rng = Rng(p.seed);
    let mut files = Vec::new();
    let accounts = p.accounts.max(2);
    let functions = p.functions_per_account.max(2);
    for ai in 0..accounts {
        let a = account_id(ai);
        let other = account_id((ai + 1) % accounts);
        let fa = |name: &str| format!("arn:aws:lambda:{REGION}:{a}:function:{name}");

        // Function policies, as AddPermission writes them.
        for fi in 0..functions {
            let name = format!("f-{fi}");
            let arn = fa(&name);
            let mut st = vec![Statement {
                condition: Some(Condition(vec![
                    ("StringEquals", vec![("AWS:SourceAccount", Values::one(&a))]),
                    (
                        "ArnLike",
                        vec![(
                            "AWS:SourceArn",
                            Values::one(format!("arn:aws:s3:::bucket-{a}-{fi}")),
                        )],
                    ),
                    ("Bool", vec![("aws:SecureTransport", Values::one("true"))]),
                    (
                        "NotIpAddress",
                        vec![(
                            "aws:SourceIp",
                            Values::many(["192.0.2.0/24", "2001:db8::/32"]),
                        )],
                    ),
                ])),
                ..grant(
                    format!("s3-{fi}"),
                    Principal::Service("s3.amazonaws.com"),
                    &arn,
                )
            }];
            if fi == 0 || rng.chance(30) {
                st.push(grant(
                    "xaccount".to_owned(),
                    Principal::Aws(format!("arn:aws:iam::{other}:root")),
                    &arn,
                ));
            }
            if rng.chance(20) {
                st.push(Statement {
                    condition: Some(Condition(vec![(
                        "ArnLike",
                        vec![(
                            "AWS:SourceArn",
                            Values::one(format!("arn:aws:events:{REGION}:{a}:rule/nightly-{fi}")),
                        )],
                    )])),
                    ..grant(
                        "events".to_owned(),
                        Principal::Service("events.amazonaws.com"),
                        &arn,
                    )
                });
            }
            files.push((
                format!("account-{a}/functions/{name}.json"),
                json(&FunctionPolicyFile {
                    policy: Policy::resource_based(st),
                    revision_id: Some(format!("r-{fi}")),
                    resource_arn: arn.clone(),
                }),
            ));
            if rng.chance(10) {
                let alias = format!("{arn}:prod");
                let st = vec![grant(
                    "partner-prod".to_owned(),
                    Principal::Aws(format!(
                        "arn:aws:iam::{other}:user/u-{}",
                        rng.below(p.principals.max(1))
                    )),
                    &alias,
                )];
                files.push((
                    format!("account-{a}/functions/{name}-prod.json"),
                    json(&FunctionPolicyFile {
                        policy: Policy::resource_based(st),
                        revision_id: None,
                        resource_arn: alias,
                    }),
                ));
            }
        }

        // Managed policies: read-only, invoke, a boundary.
        let managed = [
            (
                "LambdaReadOnly",
                identity(
                    "Read",
                    "Allow",
                    Values::many(["lambda:Get*", "lambda:List*"]),
                    Values::one(format!("arn:aws:lambda:*:{a}:function:*")),
                ),
            ),
            (
                "ListFunctions",
                identity(
                    "List",
                    "Allow",
                    Values::one("lambda:ListFunctions"),
                    Values::one("*"),
                ),
            ),
            (
                "Boundary",
                identity(
                    "Bound",
                    "Allow",
                    Values::many([
                        "lambda:Get*",
                        "lambda:List*",
                        "lambda:InvokeFunction",
                        "lambda:UpdateFunctionCode",
                    ]),
                    Values::one("*"),
                ),
            ),
        ]
        .into_iter()
        .map(|(name, statement)| ManagedPolicy {
            policy_name: name,
            arn: format!("arn:aws:iam::{a}:policy/{name}"),
            default_version_id: "v1",
            policy_version_list: vec![PolicyVersion {
                version_id: "v1",
                is_default_version: true,
                document: Policy::identity_based(vec![statement]),
            }],
        })
        .collect();
        let attached = |name: &'static str| Attached {
            policy_name: name,
            policy_arn: format!("arn:aws:iam::{a}:policy/{name}"),
        };
        // A deny of `action` on the prod alias of every function in the account.
        let deny_prod = |sid, action| {
            identity(
                sid,
                "Deny",
                action,
                Values::one(format!("arn:aws:lambda:*:{a}:function:*:prod")),
            )
        };
        let groups = 10;
        let group_list = (0..groups)
            .map(|g| Group {
                group_name: format!("g-{g}"),
                arn: format!("arn:aws:iam::{a}:group/g-{g}"),
                attached_managed_policies: vec![attached("LambdaReadOnly")],
                group_policy_list: vec![InlinePolicy {
                    policy_name: "team",
                    policy_document: Policy::identity_based(vec![
                        Statement {
                            condition: Some(Condition(vec![(
                                "IpAddress",
                                vec![(
                                    "aws:SourceIp",
                                    Values::many(["10.0.0.0/8", "172.16.0.0/12"]),
                                )],
                            )])),
                            ..identity(
                                "InvokeTeam",
                                "Allow",
                                Values::one("lambda:InvokeFunction"),
                                Values::one(format!("arn:aws:lambda:{REGION}:{a}:function:f-{g}*")),
                            )
                        },
                        deny_prod(
                            "NoProdChanges",
                            Values::many(["lambda:DeleteFunction", "lambda:UpdateFunctionCode"]),
                        ),
                    ]),
                }],
            })
            .collect();
        let own = || {
            identity(
                "Own",
                "Allow",
                Values::one("lambda:*"),
                Values::one(format!(
                    "arn:aws:lambda:{REGION}:{a}:function:${{aws:username}}-*"
                )),
            )
        };
        let mut users = Vec::with_capacity(p.principals + 2);
        for u in 0..p.principals {
            let f1 = rng.below(functions);
            let f2 = rng.below(functions);
            let mut st = vec![identity(
                "Invoke",
                "Allow",
                Values::many(["lambda:InvokeFunction", "lambda:GetFunction"]),
                Values::many([
                    fa(&format!("f-{f1}")),
                    format!("{}:*", fa(&format!("f-{f2}"))),
                ]),
            )];
            if rng.chance(10) {
                st.push(own());
            }
            if rng.chance(20) {
                st.push(Statement {
                    condition: Some(Condition(vec![(
                        "StringEquals",
                        vec![("aws:PrincipalTag/oncall", Values::one("false"))],
                    )])),
                    ..identity(
                        "NotOnWeekends",
                        "Deny",
                        Values::one("lambda:UpdateFunctionCode"),
                        Values::one("*"),
                    )
                });
            }
            let permissions_boundary = rng.chance(5).then(|| Boundary {
                permissions_boundary_type: Some("Policy"),
                permissions_boundary_arn: format!("arn:aws:iam::{a}:policy/Boundary"),
            });
            users.push(User {
                user_name: format!("u-{u}"),
                user_id: format!("AIDA{ai:06}U{u:09}"),
                arn: format!("arn:aws:iam::{a}:user/u-{u}"),
                path: "/",
                group_list: vec![format!("g-{}", u % groups)],
                attached_managed_policies: vec![],
                user_policy_list: vec![InlinePolicy {
                    policy_name: "own",
                    policy_document: Policy::identity_based(st),
                }],
                tags: Some(vec![
                    Tag {
                        key: "team",
                        value: format!("t-{}", u % groups),
                    },
                    Tag {
                        key: "oncall",
                        value: (u % 2 == 0).to_string(),
                    },
                ]),
                permissions_boundary,
            });
        }
        // Probe identities for the benchmark questions.
        let probe_user = |name: &str, id: &str, statements, managed, boundary| User {
            user_name: name.to_owned(),
            user_id: id.to_owned(),
            arn: format!("arn:aws:iam::{a}:user/{name}"),
            path: "/",
            group_list: vec![],
            attached_managed_policies: managed,
            user_policy_list: vec![InlinePolicy {
                policy_name: "probe",
                policy_document: Policy::identity_based(statements),
            }],
            tags: None,
            permissions_boundary: boundary,
        };
        if ai == 0 {
            users.push(probe_user(
                "probe-alice",
                "AIDAPROBEALICE0000001",
                vec![
                    identity(
                        "Invoke",
                        "Allow",
                        Values::one("lambda:InvokeFunction"),
                        Values::one(format!("arn:aws:lambda:{REGION}:{a}:function:f-*")),
                    ),
                    deny_prod("NoProd", Values::one("lambda:DeleteFunction")),
                ],
                vec![attached("ListFunctions")],
                None,
            ));
            users.push(probe_user(
                "probe-var",
                "AIDAPROBEVAR000000001",
                vec![own()],
                vec![],
                Some(Boundary {
                    permissions_boundary_type: None,
                    permissions_boundary_arn: format!("arn:aws:iam::{a}:policy/Boundary"),
                }),
            ));
        }
        if ai == 1 {
            let a0 = account_id(0);
            users.push(probe_user(
                "probe-partner",
                "AIDAPROBEPARTNER00001",
                vec![identity(
                    "InvokeA",
                    "Allow",
                    Values::one("lambda:InvokeFunction"),
                    Values::one(format!("arn:aws:lambda:{REGION}:{a0}:function:f-*")),
                )],
                vec![],
                None,
            ));
        }
        let roles = (p.principals / 10).max(1);
        let role_detail_list = (0..roles)
            .map(|r| {
                let trust = if r % 2 == 0 {
                    Statement {
                        condition: Some(Condition(vec![(
                            "StringEquals",
                            vec![("sts:ExternalId", Values::one(format!("ext-{r}")))],
                        )])),
                        ..trust(Principal::Aws(format!("arn:aws:iam::{other}:root")))
                    }
                } else {
                    trust(Principal::Service("lambda.amazonaws.com"))
                };
                Role {
                    role_name: format!("r-{r}"),
                    role_id: format!("AROA{ai:06}R{r:09}"),
                    arn: format!("arn:aws:iam::{a}:role/r-{r}"),
                    path: "/",
                    assume_role_policy_document: Policy::identity_based(vec![trust]),
                    attached_managed_policies: vec![],
                    role_policy_list: vec![InlinePolicy {
                        policy_name: "run",
                        policy_document: Policy::identity_based(vec![identity(
                            "Invoke",
                            "Allow",
                            Values::one("lambda:InvokeFunction"),
                            Values::one(format!(
                                "arn:aws:lambda:{REGION}:{a}:function:f-{}*",
                                r % 10
                            )),
                        )]),
                    }],
                }
            })
            .collect();
        let details = AccountDetails {
            account_id: a.clone(),
            policies: managed,
            group_detail_list: group_list,
            user_detail_list: users,
            role_detail_list,
        };
        files.push((
            format!("account-{a}/authorization-details.json"),
            json(&details),
        ));
    }
    // The organization: full access everywhere, a guard rail on half the accounts.
    let scp = |name, effect, action, targets: Vec<String>| Scp {
        name,
        content: Policy::identity_based(vec![Statement {
            sid: None,
            effect,
            principal: None,
            action,
            resource: Some(Values::one("*")),
            condition: None,
        }]),
        targets,
    };
    let organization = Organization {
        service_control_policies: vec![
            scp(
                "FullAWSAccess",
                "Allow",
                Values::one("*"),
                (0..accounts).map(account_id).collect(),
            ),
            scp(
                "NoPermissionChanges",
                "Deny",
                Values::many(["lambda:AddPermission", "lambda:RemovePermission"]),
                (0..accounts)
                    .filter(|i| i % 2 == 1)
                    .map(account_id)
                    .collect(),
            ),
        ],
    };
    files.push(("organization.json".to_owned(), json(&organization)));
    files
}

/// A role's trust statement: `principal` may call `sts:AssumeRole`.
fn trust(principal: Principal) -> Statement {
    Statement {
        sid: None,
        effect: "Allow",
        principal: Some(principal),
        action: Values::one("sts:AssumeRole"),
        resource: None,
        condition: None,
    }
}

/// Writes the generated files below `dir`.
pub fn write(dir: &std::path::Path, files: &[(String, String)]) -> std::io::Result<()> {
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{self, Request, Snapshot};

    #[test]
    fn generated_stores_load_and_answer_the_probes() {
        let params = GenParams::for_statements(2_000, 7);
        let files = generate(&params);
        assert_eq!(files, generate(&params), "deterministic");
        let (store, findings) =
            crate::store::from_texts(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        let store =
            store.unwrap_or_else(|| panic!("{:?}", findings.errors().take(3).collect::<Vec<_>>()));
        let snap = Snapshot::compile(&store).unwrap();
        let n = snap.stats().statements;
        assert!((1_500..3_000).contains(&n), "{n} statements");
        let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
        for probe in probe_requests() {
            let ctx = probe.context_entries();
            let req =
                Request::new(&probe.principal, probe.action, &probe.resource, &ctx, now).unwrap();
            assert_eq!(
                engine::decide(&snap, &req).kind().as_str(),
                probe.expect,
                "{}",
                probe.name
            );
        }
    }
}
