//! The `iamd` command: serve, validate a store, or check one request.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use iamd::engine::{self, ContextEntry, Request, Snapshot};
use iamd::store;

#[derive(Parser)]
#[command(
    name = "iamd",
    version,
    about = "AWS IAM authorization for Lambda-style resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authorization sidecar (gRPC Authorizer, Envoy ext_authz, health, reflection, /metrics).
    Serve(Box<iamd::config::ServeArgs>),
    /// Load a store and print every finding; exit 1 if any ERROR rejects it.
    Validate(ValidateArgs),
    /// Decide one request against a store.
    Check(CheckArgs),
    /// Bench tooling, not for production: write a deterministic synthetic
    /// store (`iamd::synth`) for the benchmarks and load scripts. Hidden
    /// from the command list.
    #[command(hide = true)]
    GenStore(GenStoreArgs),
}

#[derive(Args)]
struct GenStoreArgs {
    /// Number of accounts (at least 2).
    #[arg(long, default_value_t = 2)]
    accounts: usize,
    /// Functions per account, each with a function policy.
    #[arg(long, default_value_t = 100)]
    functions_per_account: usize,
    /// Users per account (plus a tenth as many roles).
    #[arg(long, default_value_t = 100)]
    principals: usize,
    /// Random seed: the same parameters and seed give the same store.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ValidateArgs {
    /// The store directory.
    #[arg(long, env = "IAMD_STORE")]
    store: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// The store directory.
    #[arg(long, env = "IAMD_STORE")]
    store: PathBuf,
    /// Who asks: an IAM user, role or assumed-role ARN, an account id or root ARN, a service principal, or `*`.
    #[arg(long)]
    principal: String,
    /// The action, such as `lambda:InvokeFunction`.
    #[arg(long)]
    action: String,
    /// The resource ARN, or `*`.
    #[arg(long)]
    resource: String,
    /// A context value, `KEY=VALUE`; repeat a key to give it several values.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Also explain the decision (matched statements, missing keys, near misses).
    #[arg(long)]
    explain: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

// Loading a large store makes millions of small allocations on every core;
// mimalloc's thread-local heaps make them several times cheaper than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Validate(args) => validate(&args),
        Command::Check(args) => check(&args),
        Command::GenStore(args) => gen_store(&args),
    }
}

fn gen_store(args: &GenStoreArgs) -> ExitCode {
    let params = iamd::synth::GenParams {
        accounts: args.accounts.max(2),
        functions_per_account: args.functions_per_account,
        principals: args.principals,
        seed: args.seed,
    };
    let files = iamd::synth::generate(&params);
    if let Err(e) = iamd::synth::write(&args.out, &files) {
        eprintln!(
            "iamd: cannot write the store to `{}`: {e}",
            args.out.display()
        );
        return ExitCode::from(1);
    }
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    println!(
        "wrote {} files ({} bytes) to {}",
        files.len(),
        bytes,
        args.out.display()
    );
    ExitCode::SUCCESS
}

fn serve(args: iamd::config::ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iamd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        // First, so that a SIGHUP sent the moment iamd starts is a reload request.
        let signals = iamd::app::Signals::install()?;
        let otlp = args.otlp();
        let _telemetry = iamd::telemetry::init(args.log_format, &args.log, otlp.as_deref())?;
        iamd::app::serve(args, signals).await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // iamd's errors say their cause in their own message: the
            // alternate form would print each cause a second time.
            eprintln!("iamd: {e}");
            ExitCode::from(1)
        }
    }
}

/// Compiles a loaded store, or says why not and gives the exit code (1).
fn compile(store: iamd::model::Store, dir: &std::path::Path) -> Result<Snapshot, ExitCode> {
    Snapshot::compile_owned(store).map_err(|e| {
        eprintln!(
            "iamd: the store `{}` cannot be compiled: {e}",
            dir.display()
        );
        ExitCode::from(1)
    })
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let (store, findings) = match store::load_with_findings(&args.store) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iamd: {e}");
            return ExitCode::from(1);
        }
    };
    let snapshot = match store.map(|s| compile(s, &args.store)).transpose() {
        Ok(snapshot) => snapshot,
        Err(code) => return code,
    };
    let stats = snapshot.map(|snapshot| {
        let stats = snapshot.stats();
        // The process is about to exit: tearing down a million-statement
        // index one allocation at a time would only delay it.
        std::mem::forget(snapshot);
        stats
    });
    let valid = stats.is_some() && !findings.has_errors();
    if args.json {
        let out = serde_json::json!({
            "valid": valid,
            "findings": findings.iter().collect::<Vec<_>>(),
            "stats": stats.map(|s| serde_json::json!({
                "accounts": s.accounts, "principals": s.principals,
                "policies": s.policies, "statements": s.statements,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for f in &findings {
            println!("{f}");
        }
        let errors = findings.errors().count();
        match stats {
            Some(s) if valid => println!(
                "store OK: {} accounts, {} principals, {} policies, {} statements; {} finding(s), none rejecting",
                s.accounts,
                s.principals,
                s.policies,
                s.statements,
                findings.len()
            ),
            _ => println!("store rejected: {errors} error(s), {} finding(s) in all", findings.len()),
        }
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn parse_context(pairs: &[String]) -> Result<Vec<ContextEntry>, String> {
    let mut out: Vec<ContextEntry> = Vec::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--context `{pair}` is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("--context `{pair}` has an empty key"));
        }
        match out.iter_mut().find(|e| e.key.eq_ignore_ascii_case(k)) {
            Some(e) => e.values.push(v.to_owned()),
            None => out.push(ContextEntry::new(k, [v])),
        }
    }
    Ok(out)
}

fn check(args: &CheckArgs) -> ExitCode {
    let context = match parse_context(&args.context) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iamd: {e}");
            return ExitCode::from(2);
        }
    };
    let request = match Request::new(
        &args.principal,
        &args.action,
        &args.resource,
        &context,
        jiff::Timestamp::now(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iamd: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match store::load(&args.store) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("iamd: {e}");
            if let store::LoadError::Rejected { findings, .. } = &e {
                for f in findings.errors() {
                    eprintln!("{f}");
                }
            }
            return ExitCode::from(1);
        }
    };
    let snapshot = match compile(loaded.store, &args.store) {
        Ok(snapshot) => snapshot,
        Err(code) => return code,
    };
    let decision = engine::decide(&snapshot, &request);
    let explanation = args.explain.then(|| engine::explain(&snapshot, &request));
    if let Some(x) = &explanation {
        if x.decision != decision {
            // The exhaustive and the indexed evaluations must agree; fail closed if not.
            eprintln!("iamd: internal error: explanation disagrees with the decision");
            return ExitCode::from(1);
        }
    }
    let message = decision.message(&request);
    if args.json {
        let mut out = serde_json::json!({
            "decision": decision.kind().as_str(),
            "principal": args.principal,
            "action": args.action,
            "resource": args.resource,
        });
        if !message.is_empty() {
            out["message"] = message.into();
        }
        if let Some(x) = &explanation {
            out["explanation"] = serde_json::to_value(x).unwrap_or_default();
        }
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("{}", decision.kind().as_str());
        if !message.is_empty() {
            println!("{message}");
        }
        if let Some(x) = &explanation {
            print_explanation(x);
        }
    }
    ExitCode::SUCCESS
}

fn print_explanation(x: &engine::Explanation) {
    let d = &x.decision_details;
    for (name, v) in [
        ("organizations (SCP)", d.organizations),
        ("resource-based", d.resource_based),
        ("identity-based", d.identity_based),
        ("permissions boundary", d.permissions_boundary),
    ] {
        if let Some(v) = v {
            println!("  {name}: {v:?}");
        }
    }
    for s in &x.matched_statements {
        println!(
            "  matched: {} {} statement {}{} in {} ({})",
            s.effect,
            s.policy_type,
            s.statement_index,
            s.sid
                .as_deref()
                .map(|sid| format!(" ({sid})"))
                .unwrap_or_default(),
            s.source_policy_id,
            s.location
        );
    }
    if !x.missing_context_values.is_empty() {
        println!(
            "  missing context keys: {}",
            x.missing_context_values.join(", ")
        );
    }
    for n in &x.near_misses {
        println!(
            "  near miss: {} {} statement {} in {}: {}",
            n.statement.effect,
            n.statement.policy_type,
            n.statement.statement_index,
            n.statement.source_policy_id,
            n.reason
        );
    }
}
