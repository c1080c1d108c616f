//! The store directory: every `*.json` file below it, recognised by shape,
//! loaded into one [`Store`] model or rejected whole with findings.
//!
//! Three shapes are read (see DESIGN.md): `aws iam get-account-authorization-details`
//! output, `aws lambda get-policy` output (a resource-based policy), and a list of
//! service control policies. Names starting with `.` are skipped, so a
//! Kubernetes ConfigMap mount (`..data` and its timestamped target) is read
//! once through its visible top-level links.

mod files;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet;

use crate::finding::{FindingType, Findings, Location};
use crate::policy::Policy;

/// Largest store file read; a bigger one is an error, not an out-of-memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A policy with the name it is attached under.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedPolicy {
    pub name: String,
    pub policy: Policy,
    /// Non-white-space size, for IAM's aggregate inline quotas.
    pub size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub id: Option<String>,
    pub groups: Vec<String>,
    pub inline: Vec<NamedPolicy>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    pub tags: Vec<(String, String)>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub inline: Vec<NamedPolicy>,
    pub attached: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub id: Option<String>,
    /// The trust policy (`AssumeRolePolicyDocument`).
    pub trust: Option<Policy>,
    pub inline: Vec<NamedPolicy>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    pub tags: Vec<(String, String)>,
    pub location: Location,
}

/// A managed policy (its default version).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedPolicy {
    pub arn: String,
    pub name: String,
    pub policy: Policy,
    pub location: Location,
}

/// A resource-based policy attached to exactly one resource ARN.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePolicy {
    pub resource_arn: String,
    pub revision_id: Option<String>,
    pub policy: Policy,
    pub location: Location,
}

/// A service control policy and the accounts it is attached to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceControlPolicy {
    pub name: String,
    pub policy: Policy,
    pub targets: Vec<String>,
    pub location: Location,
}

/// Everything a store directory holds, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store {
    pub accounts: BTreeSet<String>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub roles: Vec<Role>,
    pub managed: Vec<ManagedPolicy>,
    pub resource_policies: Vec<ResourcePolicy>,
    pub scps: Vec<ServiceControlPolicy>,
    /// The files read, relative to the store directory.
    pub files: Vec<String>,
}

impl Store {
    /// Total statements, for metrics and limits.
    pub fn statement_count(&self) -> usize {
        let inline = |p: &[NamedPolicy]| p.iter().map(|n| n.policy.statements.len()).sum::<usize>();
        self.users.iter().map(|u| inline(&u.inline)).sum::<usize>()
            + self.groups.iter().map(|g| inline(&g.inline)).sum::<usize>()
            + self
                .roles
                .iter()
                .map(|r| inline(&r.inline) + r.trust.as_ref().map_or(0, |t| t.statements.len()))
                .sum::<usize>()
            + self
                .managed
                .iter()
                .map(|m| m.policy.statements.len())
                .sum::<usize>()
            + self
                .resource_policies
                .iter()
                .map(|r| r.policy.statements.len())
                .sum::<usize>()
            + self
                .scps
                .iter()
                .map(|s| s.policy.statements.len())
                .sum::<usize>()
    }

    /// Total policy documents.
    pub fn policy_count(&self) -> usize {
        self.users.iter().map(|u| u.inline.len()).sum::<usize>()
            + self.groups.iter().map(|g| g.inline.len()).sum::<usize>()
            + self
                .roles
                .iter()
                .map(|r| r.inline.len() + usize::from(r.trust.is_some()))
                .sum::<usize>()
            + self.managed.len()
            + self.resource_policies.len()
            + self.scps.len()
    }
}

/// Why a store could not be read at all (as opposed to findings in its files).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the store directory `{path}`: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store `{}` was rejected with {count} error(s); first: {first}", path.display())]
    Rejected {
        path: PathBuf,
        count: usize,
        first: String,
        findings: Findings,
    },
}

/// The result of loading: the store when it has no ERROR, and every finding.
#[derive(Debug)]
pub struct Loaded {
    pub store: Store,
    pub findings: Findings,
}

/// Loads and validates the store directory. Findings below ERROR come back
/// with the store; any ERROR rejects it.
pub fn load(dir: &Path) -> Result<Loaded, LoadError> {
    let (store, findings) = load_with_findings(dir)?;
    match store {
        Some(store) if !findings.has_errors() => Ok(Loaded { store, findings }),
        _ => {
            let count = findings.errors().count();
            let first = findings
                .errors()
                .next()
                .map(ToString::to_string)
                .unwrap_or_default();
            Err(LoadError::Rejected {
                path: dir.to_owned(),
                count,
                first,
                findings,
            })
        }
    }
}

/// Loads the store, returning every finding even when it is rejected
/// (`iamd validate` lists them all).
pub fn load_with_findings(dir: &Path) -> Result<(Option<Store>, Findings), LoadError> {
    let paths = list_files(dir)?;
    let parts = in_parallel(&paths, |buf: &mut Vec<u8>, path| {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let mut findings = Findings::new();
        let mut part = files::Builder::default();
        match read_file(path, buf) {
            Ok(text) => part.add_file(&rel, text, &mut findings),
            Err(msg) => {
                let loc = Location {
                    file: rel.into(),
                    path: "$".into(),
                    line: 1,
                    column: 1,
                };
                findings.push(FindingType::Error, "UNREADABLE_FILE", loc, msg);
            }
        }
        (part, findings)
    });
    Ok(merge(parts))
}

/// Reads files on every core: files are independent until the cross-file
/// checks, and parsing dominates load time for large stores. Each thread
/// keeps its own scratch state `S` (a read buffer) across its items.
fn in_parallel<T: Sync, S: Default, R: Send>(
    items: &[T],
    work: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    if threads == 1 || items.len() < 2 {
        let mut scratch = S::default();
        return items.iter().map(|item| work(&mut scratch, item)).collect();
    }
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                scope.spawn(move || {
                    let mut scratch = S::default();
                    items
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, item)| (i, work(&mut scratch, item)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    // Merge in file order, so findings and the store do not depend on scheduling.
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn merge(parts: Vec<(files::Builder, Findings)>) -> (Option<Store>, Findings) {
    let mut findings = Findings::new();
    let mut builder = files::Builder::default();
    builder.reserve_for(parts.iter().map(|(part, _)| part));
    for (part, f) in parts {
        builder.absorb(part);
        findings.extend(f);
    }
    let store = builder.finish(&mut findings);
    ((!findings.has_errors()).then_some(store), findings)
}

/// Builds a store from file names and contents already in memory, with the
/// same checks as [`load_with_findings`]; `None` when any ERROR rejects it.
pub fn from_texts<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Option<Store>, Findings) {
    let files: Vec<(&str, &str)> = files.into_iter().collect();
    merge(in_parallel(&files, |_: &mut (), (name, text)| {
        let mut findings = Findings::new();
        let mut part = files::Builder::default();
        part.add_file(name, text, &mut findings);
        (part, findings)
    }))
}

/// Reads a store file into `buf` (reused across files: one open and one
/// read per file, no size probe) and checks it is UTF-8.
fn read_file<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Result<&'b str, String> {
    buf.clear();
    let file = fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let read = file
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(buf)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if read as u64 > MAX_FILE_BYTES {
        let len = fs::metadata(path).map_or(read as u64, |m| m.len());
        return Err(format!(
            "the file has {len} bytes; store files are limited to {MAX_FILE_BYTES}"
        ));
    }
    std::str::from_utf8(buf).map_err(|e| format!("the file is not UTF-8: {e}"))
}

/// Every `*.json` file below `dir`, in a stable depth-first order (names
/// sorted within each folder), each real file once.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    let mut seen_files = FxHashSet::default();
    let mut seen_dirs = FxHashSet::default();
    walk(dir, &mut out, &mut seen_files, &mut seen_dirs)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen_files: &mut FxHashSet<PathBuf>,
    seen_dirs: &mut FxHashSet<PathBuf>,
) -> Result<(), LoadError> {
    let canonical = fs::canonicalize(dir).map_err(|source| LoadError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    if !seen_dirs.insert(canonical.clone()) {
        return Ok(()); // a symlink loop or a second link to the same folder
    }
    let entries = fs::read_dir(dir).map_err(|source| LoadError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // The entry's type comes with the directory listing; only links
        // need a `stat` (ConfigMap mounts are links into `..data`).
        let Ok(mut kind) = entry.file_type() else {
            continue;
        };
        let is_link = kind.is_symlink();
        if is_link {
            match fs::metadata(&path) {
                Ok(meta) => kind = meta.file_type(),
                Err(_) => continue, // dangling link, e.g. mid-swap
            }
        }
        if kind.is_dir() {
            walk(&path, out, seen_files, seen_dirs)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
            // A plain file's real path is its real folder's plus its name;
            // only links need resolving.
            let real = if is_link {
                fs::canonicalize(&path).unwrap_or_else(|_| path.clone())
            } else {
                canonical.join(&name)
            };
            // The first visible path to a real file wins; never load it twice.
            if seen_files.insert(real) {
                out.push(path);
            }
        }
    }
    Ok(())
}

/// The size limit the IAM quotas put on all inline policies of one entity together.
pub fn inline_aggregate_limit(kind: &str) -> usize {
    match kind {
        "user" => 2_048,
        "group" => 5_120,
        _ => 10_240,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCP: &str = r#"{"ServiceControlPolicies": []}"#;

    fn unreadable(findings: &Findings) -> Vec<(String, String)> {
        findings
            .iter()
            .filter(|f| f.issue_code == "UNREADABLE_FILE")
            .map(|f| (f.location.file.to_string(), f.message.clone()))
            .collect()
    }

    #[test]
    fn reads_each_file_whole_with_one_buffer() {
        // A long file then a short one through the same per-thread buffer:
        // the second must not see the first's tail.
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{{\"ServiceControlPolicies\": []{}}}", " ".repeat(100_000));
        fs::write(dir.path().join("a.json"), &long).unwrap();
        fs::write(dir.path().join("b.json"), SCP).unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_file(&dir.path().join("a.json"), &mut buf).unwrap(),
            long
        );
        assert_eq!(
            read_file(&dir.path().join("b.json"), &mut buf).unwrap(),
            SCP
        );
        let (store, findings) = load_with_findings(dir.path()).unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(store.unwrap().files, ["a.json", "b.json"]);
    }

    #[test]
    fn oversized_and_non_utf8_files_are_findings_not_failures() {
        let dir = tempfile::tempdir().unwrap();
        let big = fs::File::create(dir.path().join("big.json")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        fs::write(dir.path().join("latin1.json"), b"{\"Policy\": \"caf\xe9\"}").unwrap();
        fs::write(dir.path().join("ok.json"), SCP).unwrap();
        let (store, findings) = load_with_findings(dir.path()).unwrap();
        assert!(store.is_none());
        let got = unreadable(&findings);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "big.json");
        assert_eq!(
            got[0].1,
            format!(
                "the file has {} bytes; store files are limited to {MAX_FILE_BYTES}",
                MAX_FILE_BYTES + 1
            )
        );
        assert_eq!(got[1].0, "latin1.json");
        assert!(
            got[1].1.starts_with("the file is not UTF-8"),
            "{}",
            got[1].1
        );
    }

    #[cfg(unix)]
    #[test]
    fn follows_links_once_and_skips_dangling_ones() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("scp.json"), SCP).unwrap();
        // A linked folder and a linked file to the same real file, and a
        // link to nothing: the real file is read once, the dangling link skipped.
        symlink(&real, dir.path().join("linked")).unwrap();
        symlink(real.join("scp.json"), dir.path().join("alias.json")).unwrap();
        symlink(
            dir.path().join("gone.json"),
            dir.path().join("dangling.json"),
        )
        .unwrap();
        let (store, findings) = load_with_findings(dir.path()).unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(store.unwrap().files, ["alias.json"]);
    }

    #[test]
    fn the_same_arn_or_the_same_name_twice_is_an_error_naming_both_places() {
        let user = |name: &str, path: &str| {
            format!(
                r#"{{"AccountId": "111122223333", "UserDetailList": [{{"UserName": "{name}", "Arn": "arn:aws:iam::111122223333:user{path}{name}"}}]}}"#
            )
        };
        let (a, b, c) = (
            user("alice", "/"),
            user("alice", "/"),
            user("Alice", "/team/"),
        );
        let (store, findings) = from_texts([("a.json", &*a), ("b.json", &*b), ("c.json", &*c)]);
        assert!(store.is_none());
        let dups: Vec<String> = findings
            .iter()
            .filter(|f| f.issue_code == "DUPLICATE_ENTITY")
            .map(|f| format!("{}: {}", f.location.file, f.message))
            .collect();
        assert_eq!(dups.len(), 3, "{dups:?}");
        assert!(dups[0].starts_with(
            "b.json: user `arn:aws:iam::111122223333:user/alice` is defined twice (first at a.json"
        ), "{dups:?}");
        // Names are unique per account ignoring case: b's and c's alice both clash with a's.
        for (i, file) in [(1, "b.json"), (2, "c.json")] {
            assert!(
                dups[i].starts_with(&format!(
                    "{file}: user `user:111122223333:alice` is defined twice (first at a.json"
                )),
                "{dups:?}"
            );
        }
    }
}
