//! The store directory: every `*.json` file below it, recognised by shape,
//! loaded into one [`Store`] model or rejected whole with findings.
//!
//! Three shapes are read (see DESIGN.md): `aws iam get-account-authorization-details`
//! output, `aws lambda get-policy` output (a resource-based policy), and a list of
//! service control policies. Names starting with `.` are skipped, so a
//! Kubernetes ConfigMap mount (`..data` and its timestamped target) is read
//! once through its visible top-level links.

pub mod etcd;
mod files;
pub mod fingerprint;
pub mod location;
pub mod workspace;

pub use location::{EtcdOptions, EtcdTarget, StoreLocation};

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::finding::{Findings, IssueCode, Location};
use crate::model::Store;

/// Largest store file read; a bigger one is an error, not an out-of-memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Over the whole store, the JSON trees of its files may take
/// [`json::BUDGET_PER_BYTE`](crate::json::BUDGET_PER_BYTE) bytes per byte of
/// the files plus this much: each file has its own budget too, and this
/// keeps many small files from adding up their allowances.
pub const STORE_BUDGET_BASE: usize = 64 << 20;

/// What the store's files have taken beyond their per-byte allowance, shared
/// by the reading threads: one addition per file.
#[derive(Default)]
struct StoreBudget {
    excess: AtomicI64,
}

impl StoreBudget {
    fn spend(&self, len: usize, used: usize) {
        let allowed = len.saturating_mul(crate::json::BUDGET_PER_BYTE);
        let delta = i64::try_from(used)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(allowed).unwrap_or(i64::MAX));
        self.excess.fetch_add(delta, Ordering::Relaxed);
    }

    fn exhausted(&self) -> bool {
        self.excess.load(Ordering::Relaxed) > i64::try_from(STORE_BUDGET_BASE).unwrap_or(i64::MAX)
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
    /// The etcd store could not be read.
    #[error("cannot read the store `{store}`: {source}")]
    Etcd {
        store: String,
        #[source]
        source: etcd::EtcdError,
    },
    /// The store validated but is too large to compile into a snapshot.
    #[error("the store `{}` cannot be compiled: {source}", path.display())]
    Compile {
        path: PathBuf,
        #[source]
        source: crate::engine::CompileError,
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
        _ => Err(LoadError::rejected(dir.to_owned(), findings)),
    }
}

impl LoadError {
    /// The store at `path` rejected, with its findings (the first ERROR in
    /// the message).
    pub fn rejected(path: PathBuf, findings: Findings) -> LoadError {
        let count = findings.errors().count();
        let first = findings
            .errors()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        LoadError::Rejected {
            path,
            count,
            first,
            findings,
        }
    }
}

/// Loads the store, returning every finding even when it is rejected
/// (`iamd validate` lists them all).
pub fn load_with_findings(dir: &Path) -> Result<(Option<Store>, Findings), LoadError> {
    let paths = list_files(dir)?;
    let (store, findings, _) = parse_each(
        &paths,
        |path| relative(dir, path),
        |path, buf, text| text(read_file(path, buf)),
        None,
    );
    Ok((store, findings))
}

/// `path` relative to the store directory `dir`, as documents are named.
fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// What the files of one chunk add to the store, and their findings.
type Part = (files::Builder, Findings);

/// Files per chunk: enough that per-chunk state is a small overhead, few
/// enough that two threads stay balanced when file sizes vary.
const CHUNK: usize = 16;

/// Reads files on every core: files are independent until the cross-file
/// checks, and parsing dominates load time for large stores. Threads take
/// chunks of consecutive items in turn and fold each chunk into one `A`;
/// each thread keeps its own scratch state `S` (a read buffer).
///
/// Returns one accumulator per chunk, in item order (so findings and the
/// store do not depend on scheduling), `None` where a thread failed.
fn in_parallel<T: Sync, S: Default, A: Default + Send>(
    items: &[T],
    work: impl Fn(&mut S, &mut A, &T) + Sync,
) -> Vec<Option<A>> {
    let chunks = items.len().div_ceil(CHUNK);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(chunks.max(1));
    let next = AtomicUsize::new(0);
    let run = || {
        let mut scratch = S::default();
        let mut done = Vec::new();
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = items.chunks(CHUNK).nth(c) else {
                return done;
            };
            let mut acc = A::default();
            for item in chunk {
                work(&mut scratch, &mut acc, item);
            }
            done.push((c, acc));
        }
    };
    // Worker threads even on one core: a worker that fails then costs its
    // chunks (and rejects the store) the same way everywhere.
    let done: Vec<Vec<(usize, A)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(run)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out: Vec<Option<A>> = (0..chunks).map(|_| None).collect();
    for (c, acc) in done.into_iter().flatten() {
        if let Some(slot) = out.get_mut(c) {
            *slot = Some(acc);
        }
    }
    out
}

/// Joins the chunks in order and runs the cross-file checks. A missing
/// chunk (its thread failed) rejects the store: fail closed, never load
/// a store with files silently left out. `name(i)` names item `i`.
fn merge(
    parts: Vec<Option<Part>>,
    over_budget: bool,
    name: impl Fn(usize) -> Option<String>,
) -> (Option<Store>, Findings) {
    let mut findings = Findings::new();
    let mut builder = files::Builder::default();
    builder.reserve_for(parts.iter().flatten().map(|(part, _)| part));
    for (c, part) in parts.into_iter().enumerate() {
        match part {
            Some((part, f)) => {
                builder.absorb(part);
                findings.extend(f);
            }
            None => {
                let loc = Location {
                    file: name(c * CHUNK).unwrap_or_default().into(),
                    path: "$".into(),
                    line: 1,
                    column: 1,
                };
                findings.push(
                    IssueCode::InternalError,
                    loc,
                    format!("reading this file and up to {} after it failed unexpectedly; the store is rejected", CHUNK - 1),
                );
            }
        }
    }
    if over_budget {
        // Some files were left unread: checks across files would only
        // report what they define as missing.
        findings.push(
            IssueCode::StoreTooLarge,
            Location {
                file: ".".into(),
                path: "$".into(),
                line: 1,
                column: 1,
            },
            format!(
                "the store's JSON values would take more than {} bytes of memory per byte of its files plus {STORE_BUDGET_BASE}; the files after that were not read, and the store is rejected",
                crate::json::BUDGET_PER_BYTE
            ),
        );
        return (None, findings);
    }
    let store = builder.finish(&mut findings);
    ((!findings.has_errors()).then_some(store), findings)
}

/// Builds a store from file names and contents already in memory, with the
/// same checks as [`load_with_findings`]; `None` when any ERROR rejects it.
pub fn from_texts<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Option<Store>, Findings) {
    from_documents(
        files
            .into_iter()
            .map(|(name, text)| (name, text.as_bytes())),
    )
}

/// Builds a store from documents named by relative path (an etcd store's
/// keys), with the checks of [`load_with_findings`]: a document that is too
/// large or not UTF-8 is an error, like such a file.
pub fn from_documents<'a>(
    documents: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> (Option<Store>, Findings) {
    from_parts(documents.into_iter().map(|(name, bytes)| (name, Ok(bytes))))
}

/// [`from_documents`], where a document that could not be read at all (a
/// large etcd document with a chunk missing, say) is the reason why, an
/// error for that document.
pub fn from_parts<'a>(
    documents: impl IntoIterator<Item = (&'a str, Result<&'a [u8], &'a str>)>,
) -> (Option<Store>, Findings) {
    let documents: Vec<(&str, Result<&[u8], &str>)> = documents.into_iter().collect();
    let (store, findings, _) = parse_documents(&documents, None);
    (store, findings)
}

/// [`from_parts`] over documents in memory; with a hasher, also what each
/// document defines and refers to and its digest.
fn parse_documents(
    documents: &[(&str, Result<&[u8], &str>)],
    hasher: Option<&std::hash::RandomState>,
) -> (Option<Store>, Findings, Vec<(workspace::DocKeys, u64)>) {
    parse_each(
        documents,
        |(name, _)| (*name).to_owned(),
        |(_, bytes), _, read| {
            read(
                bytes
                    .map_err(str::to_owned)
                    .and_then(|bytes| text(bytes, bytes.len() as u64)),
            )
        },
        hasher,
    )
}

/// Parses every item's document on every core and runs the checks across
/// documents: `name` names an item's document, `read` hands its text (or
/// why it could not be read) to the callback, using the thread's buffer.
/// With a hasher, also returns each document's keys and the digest of its
/// text, in item order.
fn parse_each<T: Sync>(
    items: &[T],
    name: impl Fn(&T) -> String + Sync,
    read: impl Fn(&T, &mut Vec<u8>, &mut dyn FnMut(Result<&str, String>)) + Sync,
    hasher: Option<&std::hash::RandomState>,
) -> (Option<Store>, Findings, Vec<(workspace::DocKeys, u64)>) {
    use std::hash::BuildHasher;
    let budget = StoreBudget::default();
    type Chunk = (Part, Vec<(workspace::DocKeys, u64)>);
    let chunks = in_parallel(items, |buf: &mut Vec<u8>, chunk: &mut Chunk, item| {
        if budget.exhausted() {
            return; // the store is rejected: read no more
        }
        let ((builder, findings), keys) = chunk;
        let name = name(item);
        read(item, buf, &mut |text| match (text, hasher) {
            (Ok(text), Some(hasher)) => {
                let mut one = files::Builder::default();
                let used = one.add_file(&name, text, findings);
                budget.spend(text.len(), used);
                keys.push((
                    workspace::DocKeys::of(one.store()),
                    hasher.hash_one(text.as_bytes()),
                ));
                builder.absorb(one);
            }
            (Ok(text), None) => {
                let used = builder.add_file(&name, text, findings);
                budget.spend(text.len(), used);
            }
            (Err(msg), hasher) => {
                if let Some(hasher) = hasher {
                    let digest = hasher.hash_one(("unreadable", msg.as_str()));
                    keys.push((workspace::DocKeys::default(), digest));
                }
                let loc = Location {
                    file: name.as_str().into(),
                    path: "$".into(),
                    line: 1,
                    column: 1,
                };
                findings.push(IssueCode::UnreadableFile, loc, msg);
            }
        });
    });
    let mut keys = Vec::new();
    let parts = chunks
        .into_iter()
        .map(|c| {
            c.map(|(part, k)| {
                keys.extend(k);
                part
            })
        })
        .collect();
    let (store, findings) = merge(parts, budget.exhausted(), |i| items.get(i).map(&name));
    (store, findings, keys)
}

/// Every document of a store directory (what [`load_with_findings`] reads),
/// by relative path, for copying it elsewhere.
pub fn read_documents(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, LoadError> {
    let mut out = BTreeMap::new();
    for path in list_files(dir)? {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let bytes = fs::read(&path).map_err(|source| LoadError::Dir {
            path: path.clone(),
            source,
        })?;
        out.insert(rel, bytes);
    }
    Ok(out)
}

/// A document's bytes as text: within [`MAX_FILE_BYTES`] and UTF-8.
fn text(bytes: &[u8], len: u64) -> Result<&str, String> {
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "the file has {len} bytes; store files are limited to {MAX_FILE_BYTES}"
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| format!("the file is not UTF-8: {e}"))
}

/// Reads a store file into `buf` (reused across files: one open and one
/// read per file, no size probe) and checks it is UTF-8.
pub(crate) fn read_file<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Result<&'b str, String> {
    buf.clear();
    let file = fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let read = file
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(buf)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let len = if read as u64 > MAX_FILE_BYTES {
        fs::metadata(path).map_or(read as u64, |m| m.len())
    } else {
        read as u64
    };
    text(buf, len)
}

/// Every `*.json` file below `dir`, in a stable depth-first order (names
/// sorted within each folder), each real file once.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut found = Vec::new();
    let mut seen_dirs = FxHashSet::default();
    walk(dir, &mut found, &mut seen_dirs)?;
    // Each folder is walked once (by its real path), so plain files are
    // distinct; only a linked file can be a second path to one of them.
    if found.iter().all(|(_, link)| link.is_none()) {
        return Ok(found.into_iter().map(|(path, _)| path).collect());
    }
    let mut real_dirs: FxHashMap<PathBuf, PathBuf> = FxHashMap::default();
    let mut seen_files = FxHashSet::default();
    let mut out = Vec::with_capacity(found.len());
    for (path, link) in found {
        let real = match link {
            Some(real) => real,
            None => match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => real_dirs
                    .entry(parent.to_owned())
                    .or_insert_with(|| {
                        fs::canonicalize(parent).unwrap_or_else(|_| parent.to_owned())
                    })
                    .join(name),
                _ => path.clone(),
            },
        };
        // The first visible path to a real file wins; never load it twice.
        if seen_files.insert(real) {
            out.push(path);
        }
    }
    Ok(out)
}

/// Lists `dir` into `found`: each `*.json` file with, when it is reached
/// through a link, its real path.
fn walk(
    dir: &Path,
    found: &mut Vec<(PathBuf, Option<PathBuf>)>,
    seen_dirs: &mut FxHashSet<PathBuf>,
) -> Result<(), LoadError> {
    let canonical = fs::canonicalize(dir).map_err(|source| LoadError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    if !seen_dirs.insert(canonical) {
        return Ok(()); // a symlink loop or a second link to the same folder
    }
    let entries = fs::read_dir(dir).map_err(|source| LoadError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    // Each name fetched once: sorting by `DirEntry::file_name` would copy
    // two names per comparison, and a folder may hold thousands of files.
    let mut entries: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| (e.file_name(), e))
        .filter(|(name, _)| !name.as_encoded_bytes().starts_with(b"."))
        .collect();
    entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    for (_, entry) in entries {
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
            walk(&path, found, seen_dirs)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
            let real = is_link.then(|| fs::canonicalize(&path).unwrap_or_else(|_| path.clone()));
            found.push((path, real));
        }
    }
    Ok(())
}

/// Gives the memory a load freed back to the operating system: call it
/// after a load or reload, above all a rejected one, on the thread that
/// dropped what the load built. mimalloc keeps freed pages mapped for reuse
/// and purges them only as later allocations come by, so a sidecar that
/// goes idle after a rejected reload of a hostile store would otherwise keep
/// its peak resident size. Costs a walk of the allocator's heaps (about a
/// millisecond); harmless when mimalloc is not the global allocator.
#[allow(unsafe_code)]
pub fn release_memory() {
    // SAFETY: `mi_collect` takes no pointers and touches only mimalloc's
    // own bookkeeping; it may be called at any time, from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
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
            .filter(|f| f.issue_code == IssueCode::UnreadableFile)
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
            .filter(|f| f.issue_code == IssueCode::DuplicateEntity)
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

    #[test]
    fn files_keep_their_order_across_chunks_and_threads() {
        // More files than several chunks, of uneven sizes, so threads finish
        // chunks out of order: the store still lists them in name order.
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for i in 0..(5 * CHUNK + 3) {
            let name = format!("f{i:03}.json");
            let pad = " ".repeat(if i % 7 == 0 { 200_000 } else { 0 });
            fs::write(
                dir.path().join(&name),
                format!("{{\"ServiceControlPolicies\": []{pad}}}"),
            )
            .unwrap();
            names.push(name);
        }
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.store.files, names);
    }

    #[test]
    fn a_chunk_whose_thread_fails_rejects_the_store() {
        // Fail closed: a worker that dies must not leave its files silently out.
        let items: Vec<usize> = (0..(3 * CHUNK)).collect();
        let parts = in_parallel(&items, |_: &mut (), acc: &mut Vec<usize>, &i| {
            if i == CHUNK + 2 {
                panic!("worker fails on item {i}");
            }
            acc.push(i);
        });
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().any(Option::is_none), "{parts:?}");
        for part in parts.iter().flatten() {
            let first = part[0];
            assert_eq!(part, &(first..first + CHUNK).collect::<Vec<_>>());
        }

        let failed: Vec<Option<Part>> = vec![Some(Part::default()), None];
        let (store, findings) = merge(failed, false, |i| Some(format!("file-{i}.json")));
        assert!(store.is_none());
        let f = findings.errors().next().unwrap();
        assert_eq!(f.issue_code, IssueCode::InternalError);
        assert_eq!(&*f.location.file, format!("file-{CHUNK}.json"));
    }

    /// `[0,0,...,0]` of about `len` bytes: two bytes a value, the densest JSON.
    fn zeros(len: usize) -> String {
        format!("[{}0]", "0,".repeat(len / 2))
    }

    #[test]
    fn a_file_of_tiny_values_is_rejected_where_its_budget_runs_out() {
        let dense = format!(
            "{{\"ServiceControlPolicies\": [],\n \"x\": {}}}",
            zeros(200_000)
        );
        let (store, findings) = from_texts([("ok.json", SCP), ("dense.json", &*dense)]);
        assert!(store.is_none());
        let errors: Vec<_> = findings.errors().collect();
        assert_eq!(errors.len(), 1, "{findings:?}");
        let f = errors[0];
        assert_eq!(f.issue_code, IssueCode::FileTooComplex);
        assert_eq!(&*f.location.file, "dense.json");
        assert_eq!(f.location.line, 2);
        // Stopped inside `x`, well before its end.
        let index: usize = f
            .location
            .path
            .strip_prefix("x[")
            .and_then(|p| p.strip_suffix(']'))
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{}", f.location.path));
        assert!(index < 100_000 * 3 / 4, "{index}");
        let budget = crate::json::budget_for(dense.len());
        assert!(f.message.contains(&budget.to_string()), "{}", f.message);

        // A policy document embedded as a string has a budget of its own.
        let embedded = serde_json::json!({
            "ResourceArn": "arn:aws:lambda:us-east-1:111122223333:function:f",
            "Policy": format!("{{\"Version\": \"2012-10-17\", \"x\": {}}}", zeros(200_000)),
        })
        .to_string();
        let (store, findings) = from_texts([("embedded.json", &*embedded)]);
        assert!(store.is_none());
        let codes: Vec<_> = findings
            .errors()
            .map(|f| (f.issue_code, f.location.path.as_str()))
            .collect();
        assert_eq!(codes, [(IssueCode::FileTooComplex, "Policy")]);
    }

    #[test]
    fn deep_nesting_is_an_error_in_files_and_embedded_documents() {
        let deep = "[".repeat(1_000_000);
        let embedded = serde_json::json!({ "Policy": format!("{{\"x\": {deep}") }).to_string();
        let (store, findings) = from_texts([("deep.json", &*deep), ("embedded.json", &*embedded)]);
        assert!(store.is_none());
        let got: Vec<_> = findings
            .errors()
            .map(|f| {
                (
                    &*f.location.file,
                    f.issue_code,
                    f.message.contains("nesting deeper"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("deep.json", IssueCode::JsonSyntaxError, true),
                ("embedded.json", IssueCode::JsonSyntaxError, true)
            ]
        );
    }

    #[test]
    fn many_files_within_their_own_budgets_can_exhaust_the_store_budget() {
        // Each file takes 24 bytes a byte, within its own 10 a byte plus
        // 1 MiB, but together they go past the store's 10 a byte plus 64 MiB.
        let file = zeros(70_000);
        let excess = 24 * file.len() - crate::json::BUDGET_PER_BYTE * file.len();
        assert!(excess < crate::json::BUDGET_BASE);
        let count = STORE_BUDGET_BASE / excess + 2 * CHUNK;
        let names: Vec<String> = (0..count).map(|i| format!("f{i:03}.json")).collect();
        let (store, findings) = from_texts(names.iter().map(|n| (n.as_str(), file.as_str())));
        assert!(store.is_none());
        let store_errors: Vec<_> = findings
            .errors()
            .filter(|f| f.issue_code == IssueCode::StoreTooLarge)
            .collect();
        assert_eq!(store_errors.len(), 1, "{store_errors:?}");
        assert_eq!(&*store_errors[0].location.file, ".");
        // Reading stopped: not every file was read.
        let read = findings
            .iter()
            .filter(|f| f.issue_code == IssueCode::UnrecognizedFile)
            .count();
        assert!(read < count, "{read} of {count}");
        assert!(!findings
            .iter()
            .any(|f| f.issue_code == IssueCode::FileTooComplex));

        // A fraction of them is a store like any.
        let few = STORE_BUDGET_BASE / excess / 2;
        let (_, findings) = from_texts(names.iter().take(few).map(|n| (n.as_str(), file.as_str())));
        assert!(!findings
            .iter()
            .any(|f| f.issue_code == IssueCode::StoreTooLarge));
    }

    #[test]
    fn generated_stores_load_well_within_their_budgets() {
        let files = crate::synth::generate(&crate::synth::GenParams {
            accounts: 3,
            functions_per_account: 50,
            principals: 50,
            seed: 7,
        });
        let (store, findings) = from_texts(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        assert!(store.is_some(), "{findings:?}");
        for (name, text) in &files {
            let (_, used) = crate::json::parse_within(text, usize::MAX).unwrap();
            assert!(
                used * 2 <= text.len() * crate::json::BUDGET_PER_BYTE + crate::json::BUDGET_BASE,
                "{name}: {used} bytes of tree for {} of text",
                text.len()
            );
        }
    }

    #[test]
    fn control_characters_in_store_arns_are_errors() {
        let resource = r#"{"ResourceArn": "arn:aws:lambda:us-east-1:111122223333:function:f\u0000", "Policy": {"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Principal": "*", "Action": "lambda:InvokeFunction", "Resource": "*"}}}"#;
        let user = r#"{"UserDetailList": [{"UserName": "a", "Arn": "arn:aws:iam::111122223333:user/\u0000/a"}]}"#;
        let managed = r#"{"Policies": [{"Arn": "arn:aws:iam::111122223333:policy/p\u0001", "PolicyName": "p", "DefaultVersionId": "v1", "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": true, "Document": {"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}}}]}]}"#;
        let (store, findings) =
            from_texts([("r.json", resource), ("u.json", user), ("m.json", managed)]);
        assert!(store.is_none());
        let got: Vec<_> = findings
            .errors()
            .map(|f| (&*f.location.file, f.issue_code, f.location.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("r.json", IssueCode::InvalidArn, "ResourceArn"),
                ("u.json", IssueCode::InvalidArn, "UserDetailList[0].Arn"),
                ("m.json", IssueCode::InvalidArn, "Policies[0].Arn"),
            ]
        );
        for f in findings.errors() {
            assert!(f.message.contains(r"\u{"), "{f}");
        }
    }

    #[test]
    fn resource_mismatch_names_the_statement_path() {
        let statement = r#"{"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:other", "Condition": {"StringEquals": {"AWS:SourceAccount": "111122223333"}}}"#;
        let arn = |f: &str| format!("arn:aws:lambda:us-east-1:111122223333:function:{f}");
        let listed = format!(
            "{{\"ResourceArn\": \"{}\",\n \"Policy\": {{\"Version\": \"2012-10-17\", \"Statement\": [{statement}, {statement}]}}}}",
            arn("a")
        );
        let single = format!(
            "{{\"ResourceArn\": \"{}\", \"Policy\": {{\"Version\": \"2012-10-17\", \"Statement\": {statement}}}}}",
            arn("b")
        );
        let embedded = format!(
            "{{\"ResourceArn\": \"{}\",\n\"Policy\": {}}}",
            arn("c"),
            serde_json::to_string(&format!(
                "{{\"Version\": \"2012-10-17\", \"Statement\": [{statement}]}}"
            ))
            .unwrap()
        );
        let (store, findings) = from_texts([
            ("listed.json", &*listed),
            ("single.json", &*single),
            ("embedded.json", &*embedded),
        ]);
        assert!(store.is_some(), "{findings:?}");
        let got: Vec<String> = findings
            .iter()
            .filter(|f| f.issue_code == IssueCode::ResourceMismatch)
            .map(|f| f.location.to_string())
            .collect();
        // Statements written as objects point at themselves; an embedded
        // document's statements at the string that holds it.
        let line2 = listed.lines().nth(1).unwrap();
        assert_eq!(
            got,
            [
                format!(
                    "listed.json:2:{}: Policy.Statement[0]",
                    line2.find(statement).unwrap() + 1
                ),
                format!(
                    "listed.json:2:{}: Policy.Statement[1]",
                    line2.rfind(statement).unwrap() + 1
                ),
                format!(
                    "single.json:1:{}: Policy.Statement",
                    single.find(statement).unwrap() + 1
                ),
                "embedded.json:2:11: Policy.Statement[0]".to_owned(),
            ]
        );
    }
}

/// Loading and compiling together: what the engine makes of a loaded store.
#[cfg(test)]
mod compile_tests {
    use super::from_texts;
    use crate::engine::{CompileError, IdSpace, Snapshot, StatementIndex};

    #[test]
    fn a_store_beyond_the_id_space_is_an_error_not_a_saturated_id() {
        // One function per new action: the catalog's actions come first.
        let functions = 1_000;
        let catalog = Snapshot::compile_within(Default::default(), usize::MAX)
            .unwrap()
            .actions
            .len();
        let arn = |i: usize| format!("arn:aws:lambda:us-east-1:111122223333:function:f{i}");
        let texts: Vec<_> = (0..functions)
            .map(|i| {
                let statement = serde_json::json!({"Effect": "Allow",
                    "Principal": {"AWS": "111122223333"}, "Action": format!("example:Action{i}"), "Resource": arn(i)});
                let text = serde_json::json!({"ResourceArn": arn(i),
                    "Policy": {"Version": "2012-10-17", "Statement": statement}});
                (format!("f{i}.json"), text.to_string())
            })
            .collect();
        let (store, findings) = from_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        let store = store.unwrap_or_else(|| panic!("{findings:?}"));

        let fits = Snapshot::compile_within(store.clone(), catalog + functions).unwrap();
        assert_eq!(fits.stats().statements, functions);
        assert_eq!(
            fits.action_id(&format!("example:action{}", functions - 1)),
            Some((catalog + functions - 1) as u32)
        );

        let limit = catalog + functions - 1;
        let err = Snapshot::compile_within(store, limit).unwrap_err();
        assert_eq!(
            err,
            CompileError::TooLarge {
                space: IdSpace::Actions,
                limit
            }
        );
        assert_eq!(
            err.to_string(),
            format!("the store holds more distinct actions than a snapshot can number (at most {limit})")
        );
    }

    /// The sids of the statements an index offers for `action`.
    fn sids(snap: &Snapshot, index: &StatementIndex, action: &str) -> Vec<String> {
        index
            .candidates(snap.action_id(action))
            .filter_map(|(_, s)| s?.sid.as_deref().map(str::to_owned))
            .collect()
    }

    #[test]
    fn an_index_offers_each_action_its_statements_in_policy_order() {
        // The user's policy interns `example:alpha` first; the function
        // policies name `beta` before `alpha`, so their buckets are sorted by
        // id, not by the order statements name them.
        let user = r#"{"AccountId": "111122223333", "UserDetailList": [{"UserName": "u", "Arn": "arn:aws:iam::111122223333:user/u",
            "UserPolicyList": [{"PolicyName": "p", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Sid": "UserAlpha", "Effect": "Allow", "Action": "example:Alpha", "Resource": "*"}]}}]}]}"#;
        let function = |name: &str| {
            format!(
                r#"{{"ResourceArn": "arn:aws:lambda:us-east-1:111122223333:function:{name}", "Policy": {{"Version": "2012-10-17", "Statement": [
                {{"Sid": "{name}Beta", "Effect": "Allow", "Principal": {{"AWS": "111122223333"}}, "Action": "example:Beta", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:{name}"}},
                {{"Sid": "{name}Both", "Effect": "Allow", "Principal": {{"AWS": "111122223333"}}, "Action": ["example:Beta", "example:Alpha"], "Resource": "arn:aws:lambda:us-east-1:111122223333:function:{name}"}},
                {{"Sid": "{name}Any", "Effect": "Deny", "Principal": {{"AWS": "111122223333"}}, "Action": "example:*", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:{name}"}}]}}}}"#
            )
        };
        let (f, g) = (function("f"), function("g"));
        let (store, findings) = from_texts([("u.json", user), ("f.json", &*f), ("g.json", &*g)]);
        let snap =
            Snapshot::compile_owned(store.unwrap_or_else(|| panic!("{findings:?}"))).unwrap();
        assert_eq!(snap.stats().statements, 7);

        let user = snap.user("111122223333", "u").unwrap();
        assert_eq!(
            sids(&snap, &user.permissions, "example:alpha"),
            ["UserAlpha"]
        );
        for name in ["f", "g"] {
            let arn = format!("arn:aws:lambda:us-east-1:111122223333:function:{name}");
            let entry = snap.resource(&arn).unwrap();
            assert_eq!(
                sids(&snap, &entry.index, "example:alpha"),
                [format!("{name}Both"), format!("{name}Any")]
            );
            assert_eq!(
                sids(&snap, &entry.index, "example:beta"),
                [
                    format!("{name}Beta"),
                    format!("{name}Both"),
                    format!("{name}Any")
                ]
            );
            assert_eq!(
                sids(&snap, &entry.index, "example:gamma"),
                [format!("{name}Any")]
            );
            // The index holds the function's own policy, and it its statements.
            let policy = &entry.index.policies[0];
            assert_eq!(&*policy.name, arn);
            for (i, s) in policy.statements.iter().enumerate() {
                assert_eq!(s.index as usize, i);
                assert!(s.sid.as_deref().unwrap().starts_with(name));
            }
        }
    }
}

/// What a change rebuilds, seen through the allocations snapshots share.
#[cfg(test)]
mod sharing_tests {
    use super::from_texts;
    use crate::engine::{Compiler, Entity, Snapshot};
    use crate::model::Store;

    const A: &str = "111122223333";

    fn managed(name: &str, action: &str) -> String {
        format!(
            r#"{{"PolicyName": "{name}", "Arn": "arn:aws:iam::{A}:policy/{name}", "DefaultVersionId": "v1",
            "PolicyVersionList": [{{"VersionId": "v1", "IsDefaultVersion": true, "Document":
            {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "{action}", "Resource": "*"}}]}}}}]}}"#
        )
    }

    /// Users u0 (attaching m0), u1 (in group g, which attaches m0) and u2
    /// (attaching m1); function f's policy.
    fn store(m0_action: &str, f_effect: &str) -> Store {
        let user = |name: &str, attached: &str, group: bool| {
            format!(
                r#"{{"UserName": "{name}", "Arn": "arn:aws:iam::{A}:user/{name}", "GroupList": {},
                "AttachedManagedPolicies": [{{"PolicyName": "{attached}", "PolicyArn": "arn:aws:iam::{A}:policy/{attached}"}}]}}"#,
                if group { r#"["g"]"# } else { "[]" }
            )
        };
        let details = format!(
            r#"{{"UserDetailList": [{}, {}, {}],
            "GroupDetailList": [{{"GroupName": "g", "Arn": "arn:aws:iam::{A}:group/g",
                "AttachedManagedPolicies": [{{"PolicyName": "m0", "PolicyArn": "arn:aws:iam::{A}:policy/m0"}}]}}],
            "Policies": [{}, {}]}}"#,
            user("u0", "m0", false),
            user("u1", "m1", true),
            user("u2", "m1", false),
            managed("m0", m0_action),
            managed("m1", "lambda:GetFunction"),
        );
        let function = format!(
            r#"{{"ResourceArn": "arn:aws:lambda:us-east-1:{A}:function:f", "Policy": {{"Version": "2012-10-17", "Statement": [
            {{"Effect": "{f_effect}", "Principal": {{"AWS": "{A}"}}, "Action": "lambda:InvokeFunction", "Resource": "*"}}]}}}}"#
        );
        let (store, findings) = from_texts([("a.json", details.as_str()), ("f.json", &function)]);
        store.unwrap_or_else(|| panic!("{findings:?}"))
    }

    fn user<'s>(snap: &'s Snapshot, name: &str) -> &'s Entity {
        snap.user(A, name).unwrap()
    }

    #[test]
    fn a_change_rebuilds_what_it_reaches_and_shares_the_rest() {
        let mut c = Compiler::new();
        c.add_store(store("lambda:ListFunctions", "Allow"));
        let first = c.snapshot().unwrap();

        // m0 changes: u0 (attaches it) and u1 (through g) are rebuilt; u2
        // and the function policy are the same allocations.
        let next = store("lambda:ListAliases", "Allow");
        c.upsert_managed(next.managed[0].clone());
        let second = c.snapshot().unwrap();
        assert!(!std::ptr::eq(user(&first, "u0"), user(&second, "u0")));
        assert!(!std::ptr::eq(user(&first, "u1"), user(&second, "u1")));
        assert!(std::ptr::eq(user(&first, "u2"), user(&second, "u2")));
        let f = format!("arn:aws:lambda:us-east-1:{A}:function:f");
        assert!(std::ptr::eq(
            first.resource(&f).unwrap(),
            second.resource(&f).unwrap()
        ));
        // The old snapshot still holds the old policy; the new one the new.
        let actions = |s: &Snapshot, u: &str| {
            user(s, u)
                .permissions
                .policies
                .iter()
                .flat_map(|p| p.statements.iter().map(|s| format!("{:?}", s.action)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            actions(&first, "u1").contains("listfunctions"),
            "{}",
            actions(&first, "u1")
        );
        assert!(
            actions(&second, "u1").contains("listaliases"),
            "{}",
            actions(&second, "u1")
        );

        // The function policy changes: no principal is rebuilt.
        let next = store("lambda:ListAliases", "Deny");
        c.upsert_resource_policy(next.resource_policies[0].clone());
        let third = c.snapshot().unwrap();
        for u in ["u0", "u1", "u2"] {
            assert!(std::ptr::eq(user(&second, u), user(&third, u)), "{u}");
        }
        assert!(!std::ptr::eq(
            second.resource(&f).unwrap(),
            third.resource(&f).unwrap()
        ));
        assert_eq!(
            third.stats(),
            Snapshot::compile_owned(next).unwrap().stats()
        );
    }
}
