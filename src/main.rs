//! The `iamd` command: serve, validate a store, or check one request.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use iamd::engine::{self, ContextEntry, Request, Snapshot};
use iamd::finding::Findings;
use iamd::store::{self, etcd, EtcdOptions, StoreLocation};

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
    /// Copy a store directory into an etcd store, or one out of it.
    #[command(subcommand)]
    Store(StoreCommand),
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

#[derive(Subcommand)]
enum StoreCommand {
    /// Replace an etcd store's documents with a directory's, as one change
    /// no reader sees half of; an invalid directory is refused first.
    Push(PushArgs),
    /// Copy an etcd store's documents into a new (or empty) directory.
    Pull(PullArgs),
}

#[derive(Args)]
struct PushArgs {
    /// The etcd store: etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
    #[arg(long, env = "IAMD_STORE")]
    store: StoreLocation,
    #[command(flatten)]
    etcd: EtcdOptions,
    /// Take over from a push that died (its marker is replaced).
    #[arg(long)]
    force: bool,
    /// Print the findings as JSON, as `iamd validate --json` does.
    #[arg(long)]
    json: bool,
    /// The store directory to push.
    dir: PathBuf,
}

#[derive(Args)]
struct PullArgs {
    /// The etcd store: etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
    #[arg(long, env = "IAMD_STORE")]
    store: StoreLocation,
    #[command(flatten)]
    etcd: EtcdOptions,
    /// The directory to write (created; if it exists it must be empty).
    dir: PathBuf,
}

#[derive(Args)]
struct ValidateArgs {
    /// The store: a directory or etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
    #[arg(long, env = "IAMD_STORE")]
    store: StoreLocation,
    #[command(flatten)]
    etcd: EtcdOptions,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// The store: a directory or etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
    #[arg(long, env = "IAMD_STORE")]
    store: StoreLocation,
    #[command(flatten)]
    etcd: EtcdOptions,
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
        Command::Store(StoreCommand::Push(args)) => push(&args),
        Command::Store(StoreCommand::Pull(args)) => pull(&args),
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
fn compile(store: iamd::model::Store, location: &StoreLocation) -> Result<Snapshot, ExitCode> {
    Snapshot::compile_owned(store).map_err(|e| {
        eprintln!("iamd: the store `{location}` cannot be compiled: {e}");
        ExitCode::from(1)
    })
}

/// A runtime for the commands that talk to etcd.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Ok(runtime.block_on(f)),
        Err(e) => {
            eprintln!("iamd: cannot start the async runtime: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Reads a store wherever it is, with every finding (the store only when no
/// ERROR rejects it).
fn read_store(
    location: &StoreLocation,
    options: &EtcdOptions,
) -> Result<(Option<iamd::model::Store>, Findings), ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("iamd: {e}");
        ExitCode::from(1)
    };
    match location {
        StoreLocation::Dir(dir) => store::load_with_findings(dir).map_err(|e| fail(&e)),
        StoreLocation::Etcd(target) => {
            let listing =
                block_on(async { etcd::Client::connect(target, options).await?.list().await })?
                    .map_err(|e| {
                        fail(&store::LoadError::Etcd {
                            store: location.to_string(),
                            source: e,
                        })
                    })?;
            if let Some(marker) = listing.push {
                return Err(fail(&format_args!(
                    "the store `{location}` is being pushed (marker {marker}); it is read once the push commits"
                )));
            }
            let assembled = etcd::assemble(&listing.documents, &listing.chunks);
            Ok(store::from_parts(assembled.iter().map(|(rel, doc)| {
                (*rel, doc.as_deref().map_err(String::as_str))
            })))
        }
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let (store, findings) = match read_store(&args.store, &args.etcd) {
        Ok(r) => r,
        Err(code) => return code,
    };
    report(store, &findings, &args.store, args.json)
}

/// Prints findings and the store's size as `iamd validate` does; the exit
/// code says whether the store loads.
fn report(
    store: Option<iamd::model::Store>,
    findings: &Findings,
    location: &StoreLocation,
    json: bool,
) -> ExitCode {
    let snapshot = match store.map(|s| compile(s, location)).transpose() {
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
    if json {
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
        for f in findings {
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
    let loaded = match read_store(&args.store, &args.etcd) {
        Ok((Some(store), findings)) if !findings.has_errors() => store,
        Ok((_, findings)) => {
            eprintln!(
                "iamd: the store `{}` was rejected with {} error(s)",
                args.store,
                findings.errors().count()
            );
            for f in findings.errors() {
                eprintln!("{f}");
            }
            return ExitCode::from(1);
        }
        Err(code) => return code,
    };
    let snapshot = match compile(loaded, &args.store) {
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

fn push(args: &PushArgs) -> ExitCode {
    let StoreLocation::Etcd(target) = &args.store else {
        eprintln!(
            "iamd: `iamd store push` writes to an etcd store (etcd://HOST:PORT/PREFIX), not `{}`",
            args.store
        );
        return ExitCode::from(2);
    };
    // The same checks as `iamd validate`, before anything is written.
    let source = StoreLocation::Dir(args.dir.clone());
    let (store, findings) = match read_store(&source, &args.etcd) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if store.is_none() || findings.has_errors() {
        report(store, &findings, &source, args.json);
        eprintln!(
            "iamd: nothing was pushed: `{}` is rejected",
            args.dir.display()
        );
        return ExitCode::from(1);
    }
    drop(store);
    let documents = match store::read_documents(&args.dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("iamd: {e}");
            return ExitCode::from(1);
        }
    };
    let pushed = match block_on(async {
        etcd::Client::connect(target, &args.etcd)
            .await?
            .push(&documents, args.force)
            .await
    }) {
        Ok(pushed) => pushed,
        Err(code) => return code,
    };
    match pushed {
        Ok(r) => {
            println!(
                "pushed {} documents to {}: {} written, {} unchanged, {} removed; revision {}",
                documents.len(),
                args.store,
                r.written,
                r.unchanged,
                r.removed,
                r.revision
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iamd: the push to `{}` failed: {e}", args.store);
            ExitCode::from(1)
        }
    }
}

fn pull(args: &PullArgs) -> ExitCode {
    let StoreLocation::Etcd(target) = &args.store else {
        eprintln!(
            "iamd: `iamd store pull` reads an etcd store (etcd://HOST:PORT/PREFIX), not `{}`",
            args.store
        );
        return ExitCode::from(2);
    };
    let occupied = std::fs::read_dir(&args.dir).is_ok_and(|mut e| e.next().is_some());
    if occupied {
        eprintln!(
            "iamd: `{}` is not empty; pull writes into a new or empty directory",
            args.dir.display()
        );
        return ExitCode::from(2);
    }
    let listing = match block_on(async {
        etcd::Client::connect(target, &args.etcd)
            .await?
            .list()
            .await
    }) {
        Ok(Ok(listing)) => listing,
        Ok(Err(e)) => {
            eprintln!("iamd: cannot read the store `{}`: {e}", args.store);
            return ExitCode::from(1);
        }
        Err(code) => return code,
    };
    if let Some(marker) = &listing.push {
        eprintln!(
            "iamd: the store `{}` is being pushed (marker {marker}); pull it once the push commits",
            args.store
        );
        return ExitCode::from(1);
    }
    for (rel, doc) in &etcd::assemble(&listing.documents, &listing.chunks) {
        let value = match doc {
            Ok(value) => value,
            Err(why) => {
                eprintln!("iamd: cannot pull `{rel}`: {why}");
                return ExitCode::from(1);
            }
        };
        // `is_document` already refused empty, `.` and `..` parts.
        let path = args.dir.join(rel);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, value));
        if let Err(e) = written {
            eprintln!("iamd: cannot write `{}`: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    println!(
        "pulled {} documents from {} at revision {} into {}",
        listing.documents.len(),
        args.store,
        listing.modified,
        args.dir.display()
    );
    ExitCode::SUCCESS
}
