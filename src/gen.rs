//! A deterministic generator of realistic synthetic stores, for benchmarks
//! (`iamd gen-store`).
//!
//! Each account gets functions whose policies look like what `AddPermission`
//! writes (service principals with aws:SourceArn / aws:SourceAccount,
//! cross-account grants, alias policies), users in groups with managed and
//! inline policies using wildcards and conditions, a few explicit denies and
//! permissions boundaries, roles with trust policies, and an organization
//! with SCPs. Fixed probe identities in the first two accounts let benchmarks
//! ask the same six questions at every store size.

use std::fmt::Write as _;

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

fn statement(
    out: &mut String,
    sid: &str,
    effect: &str,
    principal: Option<&str>,
    action: &str,
    resource: &str,
    condition: Option<&str>,
) {
    let _ = write!(out, r#"{{"Sid":"{sid}","Effect":"{effect}","#);
    if let Some(p) = principal {
        let _ = write!(out, r#""Principal":{p},"#);
    }
    let _ = write!(out, r#""Action":{action},"Resource":{resource}"#);
    if let Some(c) = condition {
        let _ = write!(out, r#","Condition":{c}"#);
    }
    out.push('}');
}

fn policy(statements: &[String]) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Id":"default","Statement":[{}]}}"#,
        statements.join(",")
    )
}

fn identity_policy(statements: &[String]) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    )
}

fn one(f: impl FnOnce(&mut String)) -> String {
    let mut s = String::new();
    f(&mut s);
    s
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
            let mut st = vec![one(|o| {
                statement(
                    o,
                    &format!("s3-{fi}"),
                    "Allow",
                    Some(r#"{"Service":"s3.amazonaws.com"}"#),
                    r#""lambda:InvokeFunction""#,
                    &format!("\"{arn}\""),
                    Some(&format!(
                        r#"{{"StringEquals":{{"AWS:SourceAccount":"{a}"}},"ArnLike":{{"AWS:SourceArn":"arn:aws:s3:::bucket-{a}-{fi}"}},"Bool":{{"aws:SecureTransport":"true"}},"NotIpAddress":{{"aws:SourceIp":["192.0.2.0/24","2001:db8::/32"]}}}}"#
                    )),
                )
            })];
            if fi == 0 || rng.chance(30) {
                st.push(one(|o| {
                    statement(
                        o,
                        "xaccount",
                        "Allow",
                        Some(&format!(r#"{{"AWS":"arn:aws:iam::{other}:root"}}"#)),
                        r#""lambda:InvokeFunction""#,
                        &format!("\"{arn}\""),
                        None,
                    )
                }));
            }
            if rng.chance(20) {
                st.push(one(|o| {
                    statement(
                        o,
                        "events",
                        "Allow",
                        Some(r#"{"Service":"events.amazonaws.com"}"#),
                        r#""lambda:InvokeFunction""#,
                        &format!("\"{arn}\""),
                        Some(&format!(r#"{{"ArnLike":{{"AWS:SourceArn":"arn:aws:events:{REGION}:{a}:rule/nightly-{fi}"}}}}"#)),
                    )
                }));
            }
            files.push((
                format!("account-{a}/functions/{name}.json"),
                format!(
                    r#"{{"Policy":{},"RevisionId":"r-{fi}","ResourceArn":"{arn}"}}"#,
                    policy(&st)
                ),
            ));
            if rng.chance(10) {
                let alias = format!("{arn}:prod");
                let st = vec![one(|o| {
                    statement(
                        o,
                        "partner-prod",
                        "Allow",
                        Some(&format!(
                            r#"{{"AWS":"arn:aws:iam::{other}:user/u-{}"}}"#,
                            rng.below(p.principals.max(1))
                        )),
                        r#""lambda:InvokeFunction""#,
                        &format!("\"{alias}\""),
                        None,
                    )
                })];
                files.push((
                    format!("account-{a}/functions/{name}-prod.json"),
                    format!(r#"{{"Policy":{},"ResourceArn":"{alias}"}}"#, policy(&st)),
                ));
            }
        }

        // Managed policies: read-only, invoke, a boundary.
        let managed = [
            (
                "LambdaReadOnly",
                identity_policy(&[one(|o| {
                    statement(
                        o,
                        "Read",
                        "Allow",
                        None,
                        r#"["lambda:Get*","lambda:List*"]"#,
                        &format!("\"arn:aws:lambda:*:{a}:function:*\""),
                        None,
                    )
                })]),
            ),
            (
                "ListFunctions",
                identity_policy(&[one(|o| {
                    statement(
                        o,
                        "List",
                        "Allow",
                        None,
                        r#""lambda:ListFunctions""#,
                        r#""*""#,
                        None,
                    )
                })]),
            ),
            (
                "Boundary",
                identity_policy(&[one(|o| {
                    statement(
                        o,
                        "Bound",
                        "Allow",
                        None,
                        r#"["lambda:Get*","lambda:List*","lambda:InvokeFunction","lambda:UpdateFunctionCode"]"#,
                        r#""*""#,
                        None,
                    )
                })]),
            ),
        ];
        let mut gaad = String::with_capacity(p.principals * 700);
        let _ = write!(gaad, r#"{{"AccountId":"{a}","Policies":["#);
        for (i, (name, doc)) in managed.iter().enumerate() {
            if i > 0 {
                gaad.push(',');
            }
            let _ = write!(
                gaad,
                r#"{{"PolicyName":"{name}","Arn":"arn:aws:iam::{a}:policy/{name}","DefaultVersionId":"v1","PolicyVersionList":[{{"VersionId":"v1","IsDefaultVersion":true,"Document":{doc}}}]}}"#
            );
        }
        gaad.push_str(r#"],"GroupDetailList":["#);
        let groups = 10;
        for g in 0..groups {
            if g > 0 {
                gaad.push(',');
            }
            let doc = identity_policy(&[
                one(|o| {
                    statement(
                        o,
                        "InvokeTeam",
                        "Allow",
                        None,
                        r#""lambda:InvokeFunction""#,
                        &format!("\"arn:aws:lambda:{REGION}:{a}:function:f-{g}*\""),
                        Some(r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","172.16.0.0/12"]}}"#),
                    )
                }),
                one(|o| {
                    statement(
                        o,
                        "NoProdChanges",
                        "Deny",
                        None,
                        r#"["lambda:DeleteFunction","lambda:UpdateFunctionCode"]"#,
                        &format!("\"arn:aws:lambda:*:{a}:function:*:prod\""),
                        None,
                    )
                }),
            ]);
            let _ = write!(
                gaad,
                r#"{{"GroupName":"g-{g}","Arn":"arn:aws:iam::{a}:group/g-{g}","AttachedManagedPolicies":[{{"PolicyName":"LambdaReadOnly","PolicyArn":"arn:aws:iam::{a}:policy/LambdaReadOnly"}}],"GroupPolicyList":[{{"PolicyName":"team","PolicyDocument":{doc}}}]}}"#
            );
        }
        gaad.push_str(r#"],"UserDetailList":["#);
        let mut users: Vec<String> = Vec::with_capacity(p.principals + 2);
        for u in 0..p.principals {
            let f1 = rng.below(functions);
            let f2 = rng.below(functions);
            let mut st = vec![one(|o| {
                statement(
                    o,
                    "Invoke",
                    "Allow",
                    None,
                    r#"["lambda:InvokeFunction","lambda:GetFunction"]"#,
                    &format!(
                        r#"["{}","{}:*"]"#,
                        fa(&format!("f-{f1}")),
                        fa(&format!("f-{f2}"))
                    ),
                    None,
                )
            })];
            if rng.chance(10) {
                st.push(one(|o| {
                    statement(
                        o,
                        "Own",
                        "Allow",
                        None,
                        r#""lambda:*""#,
                        &format!("\"arn:aws:lambda:{REGION}:{a}:function:${{aws:username}}-*\""),
                        None,
                    )
                }));
            }
            if rng.chance(20) {
                st.push(one(|o| {
                    statement(
                        o,
                        "NotOnWeekends",
                        "Deny",
                        None,
                        r#""lambda:UpdateFunctionCode""#,
                        r#""*""#,
                        Some(r#"{"StringEquals":{"aws:PrincipalTag/oncall":"false"}}"#),
                    )
                }));
            }
            let boundary = if rng.chance(5) {
                format!(
                    r#","PermissionsBoundary":{{"PermissionsBoundaryType":"Policy","PermissionsBoundaryArn":"arn:aws:iam::{a}:policy/Boundary"}}"#
                )
            } else {
                String::new()
            };
            users.push(format!(
                r#"{{"UserName":"u-{u}","UserId":"AIDA{ai:06}U{u:09}","Arn":"arn:aws:iam::{a}:user/u-{u}","Path":"/","GroupList":["g-{}"],"AttachedManagedPolicies":[],"UserPolicyList":[{{"PolicyName":"own","PolicyDocument":{}}}],"Tags":[{{"Key":"team","Value":"t-{}"}},{{"Key":"oncall","Value":"{}"}}]{boundary}}}"#,
                u % groups,
                identity_policy(&st),
                u % groups,
                u % 2 == 0
            ));
        }
        // Probe identities for the benchmark questions.
        if ai == 0 {
            let alice = identity_policy(&[
                one(|o| {
                    statement(
                        o,
                        "Invoke",
                        "Allow",
                        None,
                        r#""lambda:InvokeFunction""#,
                        &format!("\"arn:aws:lambda:{REGION}:{a}:function:f-*\""),
                        None,
                    )
                }),
                one(|o| {
                    statement(
                        o,
                        "NoProd",
                        "Deny",
                        None,
                        r#""lambda:DeleteFunction""#,
                        &format!("\"arn:aws:lambda:*:{a}:function:*:prod\""),
                        None,
                    )
                }),
            ]);
            users.push(format!(
                r#"{{"UserName":"probe-alice","UserId":"AIDAPROBEALICE0000001","Arn":"arn:aws:iam::{a}:user/probe-alice","Path":"/","GroupList":[],"AttachedManagedPolicies":[{{"PolicyName":"ListFunctions","PolicyArn":"arn:aws:iam::{a}:policy/ListFunctions"}}],"UserPolicyList":[{{"PolicyName":"probe","PolicyDocument":{alice}}}]}}"#
            ));
            let var = identity_policy(&[one(|o| {
                statement(
                    o,
                    "Own",
                    "Allow",
                    None,
                    r#""lambda:*""#,
                    &format!("\"arn:aws:lambda:{REGION}:{a}:function:${{aws:username}}-*\""),
                    None,
                )
            })]);
            users.push(format!(
                r#"{{"UserName":"probe-var","UserId":"AIDAPROBEVAR000000001","Arn":"arn:aws:iam::{a}:user/probe-var","Path":"/","GroupList":[],"AttachedManagedPolicies":[],"UserPolicyList":[{{"PolicyName":"probe","PolicyDocument":{var}}}],"PermissionsBoundary":{{"PermissionsBoundaryArn":"arn:aws:iam::{a}:policy/Boundary"}}}}"#
            ));
        }
        if ai == 1 {
            let a0 = account_id(0);
            let partner = identity_policy(&[one(|o| {
                statement(
                    o,
                    "InvokeA",
                    "Allow",
                    None,
                    r#""lambda:InvokeFunction""#,
                    &format!("\"arn:aws:lambda:{REGION}:{a0}:function:f-*\""),
                    None,
                )
            })]);
            users.push(format!(
                r#"{{"UserName":"probe-partner","UserId":"AIDAPROBEPARTNER00001","Arn":"arn:aws:iam::{a}:user/probe-partner","Path":"/","GroupList":[],"AttachedManagedPolicies":[],"UserPolicyList":[{{"PolicyName":"probe","PolicyDocument":{partner}}}]}}"#
            ));
        }
        gaad.push_str(&users.join(","));
        gaad.push_str(r#"],"RoleDetailList":["#);
        let roles = (p.principals / 10).max(1);
        for r in 0..roles {
            if r > 0 {
                gaad.push(',');
            }
            let trust = if r % 2 == 0 {
                format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{other}:root"}},"Action":"sts:AssumeRole","Condition":{{"StringEquals":{{"sts:ExternalId":"ext-{r}"}}}}}}]}}"#
                )
            } else {
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#.to_owned()
            };
            let doc = identity_policy(&[one(|o| {
                statement(
                    o,
                    "Invoke",
                    "Allow",
                    None,
                    r#""lambda:InvokeFunction""#,
                    &format!("\"arn:aws:lambda:{REGION}:{a}:function:f-{}*\"", r % 10),
                    None,
                )
            })]);
            let _ = write!(
                gaad,
                r#"{{"RoleName":"r-{r}","RoleId":"AROA{ai:06}R{r:09}","Arn":"arn:aws:iam::{a}:role/r-{r}","Path":"/","AssumeRolePolicyDocument":{trust},"AttachedManagedPolicies":[],"RolePolicyList":[{{"PolicyName":"run","PolicyDocument":{doc}}}]}}"#
            );
        }
        gaad.push_str("]}");
        files.push((format!("account-{a}/authorization-details.json"), gaad));
    }
    // The organization: full access everywhere, a guard rail on half the accounts.
    let all: Vec<String> = (0..accounts)
        .map(|i| format!("\"{}\"", account_id(i)))
        .collect();
    let half: Vec<String> = (0..accounts)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("\"{}\"", account_id(i)))
        .collect();
    files.push((
        "organization.json".to_owned(),
        format!(
            r#"{{"ServiceControlPolicies":[{{"Name":"FullAWSAccess","Content":{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"*","Resource":"*"}}]}},"Targets":[{}]}},{{"Name":"NoPermissionChanges","Content":{{"Version":"2012-10-17","Statement":[{{"Effect":"Deny","Action":["lambda:AddPermission","lambda:RemovePermission"],"Resource":"*"}}]}},"Targets":[{}]}}]}}"#,
            all.join(","),
            half.join(",")
        ),
    ));
    files
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
    use crate::engine::{self, ContextEntry, Request, Snapshot};

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
            let ctx: Vec<ContextEntry> = probe
                .context
                .iter()
                .map(|(k, v)| ContextEntry::new(*k, [v]))
                .collect();
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
