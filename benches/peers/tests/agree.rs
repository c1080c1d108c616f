//! Cedar gives iamd's answer to the six probe questions, with one Cedar
//! policy per IAM statement. `cargo test --release` (the 10k store takes a
//! few seconds to translate in a debug build).

use iamd_peers::Fixture;

fn check(size: usize) {
    let fx = Fixture::new(size).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fx.cedar.policies.len(),
        fx.statements,
        "one Cedar policy per IAM statement"
    );
    assert_eq!(fx.cedar.policy_set.policies().count(), fx.statements);
    for a in fx.answers().unwrap_or_else(|e| panic!("{e}")) {
        println!("{size}: {a:?}");
        assert_eq!(a.iamd, a.expect, "{}: iamd", a.probe);
        assert!(a.agree(), "{size}: Cedar and iamd differ: {a:?}");
        assert!(a.agree_exactly(), "{size}: deny kinds differ: {a:?}");
        assert_eq!(a.cedar_errors, 0, "{a:?}");
        assert!(a.slice_pr_size <= a.slice_size && a.slice_size <= fx.statements);
    }
}

#[test]
fn probes_agree_at_1k() {
    check(1_000);
}

#[test]
fn probes_agree_at_10k() {
    check(10_000);
}

/// Beyond the probes: a grid of users, roles, a service, actions and
/// functions at 1k. Cedar does not reproduce IAM's cross-account rule (both
/// sides must allow) nor the rule that an account principal in a resource
/// policy still needs an identity allow, so some answers differ; the test
/// prints how many and checks they stay few.
#[test]
fn request_grid_mostly_agrees() {
    use iamd::synth::{account_id, REGION};
    let fx = Fixture::new(1_000).unwrap_or_else(|e| panic!("{e}"));
    let (a0, a1) = (account_id(0), account_id(1));
    let mut principals: Vec<String> = Vec::new();
    for u in 0..12 {
        principals.push(format!("arn:aws:iam::{a0}:user/u-{u}"));
        principals.push(format!("arn:aws:iam::{a1}:user/u-{u}"));
    }
    for r in 0..3 {
        principals.push(format!("arn:aws:iam::{a0}:role/r-{r}"));
    }
    principals.push("s3.amazonaws.com".into());
    principals.push(format!("arn:aws:iam::{a0}:user/probe-alice"));
    let actions = [
        "lambda:InvokeFunction",
        "lambda:GetFunction",
        "lambda:UpdateFunctionCode",
        "lambda:DeleteFunction",
        "lambda:ListFunctions",
        "lambda:AddPermission",
    ];
    let mut resources = Vec::new();
    for f in 0..12 {
        resources.push(format!("arn:aws:lambda:{REGION}:{a0}:function:f-{f}"));
        resources.push(format!("arn:aws:lambda:{REGION}:{a0}:function:f-{f}:prod"));
    }
    // Resources that requests name must exist as Cedar entities.
    let known: std::collections::HashSet<String> = fx
        .cedar
        .policies
        .iter()
        .filter_map(|t| t.resource.clone())
        .collect();
    let contexts = [
        vec![],
        vec![("aws:SourceIp", "10.1.2.3".to_owned())],
        vec![
            ("aws:SourceAccount", a0.clone()),
            ("aws:SourceArn", format!("arn:aws:s3:::bucket-{a0}-3")),
            ("aws:SecureTransport", "true".to_owned()),
        ],
    ];
    let (mut total, mut same, mut allows) = (0, 0, 0);
    let mut differ: std::collections::BTreeMap<String, usize> = Default::default();
    let now = fx.now;
    for p in &principals {
        for a in actions {
            for r in resources.iter().filter(|r| known.contains(*r)) {
                for ctx in &contexts {
                    let entries: Vec<iamd::engine::ContextEntry> = ctx
                        .iter()
                        .map(|(k, v)| iamd::engine::ContextEntry::new(*k, [v]))
                        .collect();
                    let req = iamd::engine::Request::new(p, a, r, &entries, now)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let iamd = iamd::engine::decide(&fx.snapshot, &req).kind().as_str();
                    let creq = fx
                        .cedar
                        .request(p, a, r, ctx)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let (cedar, errors) =
                        iamd_peers::answer(&creq, &fx.cedar.policy_set, &fx.cedar.entities);
                    assert_eq!(errors, 0);
                    total += 1;
                    allows += usize::from(iamd == "Allow");
                    if (iamd == "Allow") == (cedar == "Allow") {
                        same += 1;
                    } else {
                        let who = if p.contains(&a1) {
                            "other-account"
                        } else {
                            "same-account"
                        };
                        *differ
                            .entry(format!("iamd {iamd}, Cedar {cedar}, {who}"))
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    println!("grid: {same}/{total} agree ({allows} allowed by iamd); differences: {differ:?}");
    assert!(
        allows > 0 && same * 100 >= total * 95,
        "{same}/{total}: {differ:?}"
    );
}
