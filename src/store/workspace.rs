//! A store kept up to date document by document.
//!
//! The first load is all or nothing, with exactly the findings of
//! `iamd validate`: a store with any ERROR does not serve. After that, each
//! change names the documents it touches. Only they are parsed; a document
//! with an ERROR is rejected alone and its previous version (or, for a new
//! document, its absence) stays; the checks across documents (one
//! definition per ARN and per name, attached managed policies and groups
//! that exist) run on what the change defines, refers to and removes, and a
//! document that breaks one is rejected too. The accepted documents then
//! change the [`Compiler`], which rebuilds only what they reach.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::files;
use crate::engine::{CompileError, Compiler, Snapshot, Stats};
use crate::finding::{echo, Findings, IssueCode, Location};
use crate::model::Store;

/// What kind of thing a document defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    User,
    Group,
    Role,
    Managed,
    Resource,
}

impl Kind {
    /// As the whole-store duplicate check names it.
    fn what(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Role => "role",
            Kind::Managed => "managed policy",
            Kind::Resource => "the resource policy of",
        }
    }
}

/// One thing a document defines, with what it refers to.
#[derive(Debug, Clone)]
struct Defined {
    kind: Kind,
    arn: String,
    /// Users, groups and roles: their account and name.
    account: String,
    name: String,
    location: Location,
    /// Managed policies attached (and the boundary).
    managed: Vec<String>,
    /// Groups a user is in.
    groups: Vec<String>,
}

/// What one document defines and refers to.
#[derive(Debug, Clone, Default)]
pub struct DocKeys {
    accounts: Vec<String>,
    defined: Vec<Defined>,
}

impl DocKeys {
    /// The keys of a document that `store` holds alone.
    pub(super) fn of(store: &Store) -> DocKeys {
        let mut defined = Vec::with_capacity(
            store.users.len()
                + store.groups.len()
                + store.roles.len()
                + store.managed.len()
                + store.resource_policies.len(),
        );
        for u in &store.users {
            defined.push(Defined {
                kind: Kind::User,
                arn: u.arn.clone(),
                account: u.account.clone(),
                name: u.name.clone(),
                location: u.location.clone(),
                managed: u.attached.iter().chain(&u.boundary).cloned().collect(),
                groups: u.groups.clone(),
            });
        }
        for g in &store.groups {
            defined.push(Defined {
                kind: Kind::Group,
                arn: g.arn.clone(),
                account: g.account.clone(),
                name: g.name.clone(),
                location: g.location.clone(),
                managed: g.attached.clone(),
                groups: Vec::new(),
            });
        }
        for r in &store.roles {
            defined.push(Defined {
                kind: Kind::Role,
                arn: r.arn.clone(),
                account: r.account.clone(),
                name: r.name.clone(),
                location: r.location.clone(),
                managed: r.attached.iter().chain(&r.boundary).cloned().collect(),
                groups: Vec::new(),
            });
        }
        for m in &store.managed {
            defined.push(Defined {
                kind: Kind::Managed,
                arn: m.arn.clone(),
                account: String::new(),
                name: m.name.clone(),
                location: m.location.clone(),
                managed: Vec::new(),
                groups: Vec::new(),
            });
        }
        for p in &store.resource_policies {
            defined.push(Defined {
                kind: Kind::Resource,
                arn: p.resource_arn.clone(),
                account: String::new(),
                name: String::new(),
                location: p.location.clone(),
                managed: Vec::new(),
                groups: Vec::new(),
            });
        }
        DocKeys {
            accounts: store.accounts.iter().cloned().collect(),
            defined,
        }
    }
}

/// IAM names are unique per account, ignoring case.
fn folded(name: &str) -> String {
    name.to_lowercase()
}

/// Every accepted document's keys together: who defines each ARN and name,
/// and how often each managed policy and group is referred to.
#[derive(Debug, Default)]
struct CrossIndex {
    arns: FxHashMap<String, Vec<Location>>,
    names: FxHashMap<(Kind, String, String), Vec<Location>>,
    managed: FxHashMap<String, usize>,
    groups: FxHashMap<(String, String), usize>,
    managed_refs: FxHashMap<String, usize>,
    group_refs: FxHashMap<(String, String), usize>,
    accounts: FxHashMap<String, usize>,
}

/// Counts `key` once more (`adding`) or once less, forgetting it at zero.
fn bump<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, usize>, key: K, adding: bool) {
    use std::collections::hash_map::Entry;
    match (map.entry(key), adding) {
        (Entry::Occupied(mut e), true) => *e.get_mut() += 1,
        (Entry::Vacant(e), true) => {
            e.insert(1);
        }
        (Entry::Occupied(mut e), false) => {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        (Entry::Vacant(_), false) => {}
    }
}

/// Adds `at` to the places defining `key`, or takes it away.
fn place<K: std::hash::Hash + Eq>(
    map: &mut FxHashMap<K, Vec<Location>>,
    key: K,
    at: &Location,
    adding: bool,
) {
    use std::collections::hash_map::Entry;
    match (map.entry(key), adding) {
        (Entry::Occupied(mut e), true) => e.get_mut().push(at.clone()),
        (Entry::Vacant(e), true) => {
            e.insert(vec![at.clone()]);
        }
        (Entry::Occupied(mut e), false) => {
            let list = e.get_mut();
            if let Some(i) = list.iter().position(|l| l == at) {
                list.remove(i);
            }
            if list.is_empty() {
                e.remove();
            }
        }
        (Entry::Vacant(_), false) => {}
    }
}

impl CrossIndex {
    fn add(&mut self, keys: &DocKeys) {
        self.tally(keys, true);
    }

    fn remove(&mut self, keys: &DocKeys) {
        self.tally(keys, false);
    }

    /// Counts a document's keys in (`adding`) or out.
    fn tally(&mut self, keys: &DocKeys, adding: bool) {
        for a in &keys.accounts {
            bump(&mut self.accounts, a.clone(), adding);
        }
        for d in &keys.defined {
            place(&mut self.arns, d.arn.clone(), &d.location, adding);
            if let Some(k) = name_key(d) {
                place(&mut self.names, k, &d.location, adding);
            }
            match d.kind {
                Kind::Managed => bump(&mut self.managed, d.arn.clone(), adding),
                Kind::Group => bump(
                    &mut self.groups,
                    (d.account.clone(), d.name.clone()),
                    adding,
                ),
                _ => {}
            }
            for m in &d.managed {
                bump(&mut self.managed_refs, m.clone(), adding);
            }
            for g in &d.groups {
                bump(&mut self.group_refs, (d.account.clone(), g.clone()), adding);
            }
        }
    }

    /// What breaks a check across documents once `new` replaced `old`
    /// (both already in the index that way).
    fn check(&self, old: Option<&DocKeys>, new: &DocKeys) -> Findings {
        let mut findings = Findings::new();
        for d in &new.defined {
            let first = |list: Option<&Vec<Location>>| {
                list.filter(|l| l.len() > 1)
                    .and_then(|l| l.iter().find(|at| **at != d.location).or(l.first()))
                    .cloned()
            };
            if let Some(first) = first(self.arns.get(&d.arn)) {
                findings.push(
                    IssueCode::DuplicateEntity,
                    d.location.clone(),
                    format!(
                        "{} `{}` is defined twice (first at {first})",
                        d.kind.what(),
                        echo(&d.arn)
                    ),
                );
            }
            if let Some(key) = name_key(d) {
                if let Some(first) = first(self.names.get(&key)) {
                    let what = d.kind.what();
                    findings.push(
                        IssueCode::DuplicateEntity,
                        d.location.clone(),
                        format!(
                            "{what} `{}` is defined twice (first at {first})",
                            echo(&format!("{what}:{}:{}", key.1, key.2))
                        ),
                    );
                }
            }
            for m in &d.managed {
                if !self.managed.contains_key(m) {
                    findings.push(
                        IssueCode::UnknownManagedPolicy,
                        d.location.clone(),
                        files::unknown_managed(d.kind.what(), &d.name, m),
                    );
                }
            }
            for g in &d.groups {
                if !self.groups.contains_key(&(d.account.clone(), g.clone())) {
                    findings.push(
                        IssueCode::UnknownGroup,
                        d.location.clone(),
                        files::unknown_group(&d.name, g),
                    );
                }
            }
        }
        // What the new version no longer defines must not be needed elsewhere.
        for d in old.iter().flat_map(|o| &o.defined) {
            match d.kind {
                Kind::Managed
                    if !self.managed.contains_key(&d.arn)
                        && self.managed_refs.contains_key(&d.arn) =>
                {
                    findings.push(
                        IssueCode::UnknownManagedPolicy,
                        d.location.clone(),
                        format!(
                            "this change removes managed policy `{}`, which {} user(s), group(s) or role(s) still attach",
                            echo(&d.arn),
                            self.managed_refs.get(&d.arn).copied().unwrap_or(0)
                        ),
                    );
                }
                Kind::Group => {
                    let key = (d.account.clone(), d.name.clone());
                    if !self.groups.contains_key(&key) && self.group_refs.contains_key(&key) {
                        findings.push(
                            IssueCode::UnknownGroup,
                            d.location.clone(),
                            format!(
                                "this change removes group `{}`, which {} user(s) are still in",
                                echo(&d.name),
                                self.group_refs.get(&key).copied().unwrap_or(0)
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
        findings
    }
}

fn name_key(d: &Defined) -> Option<(Kind, String, String)> {
    matches!(d.kind, Kind::User | Kind::Group | Kind::Role)
        .then(|| (d.kind, d.account.clone(), folded(&d.name)))
}

/// A document as the workspace holds it.
#[derive(Debug)]
struct Accepted {
    digest: u64,
    keys: DocKeys,
    /// Findings below ERROR.
    warnings: usize,
}

/// A document's content in a change: its bytes, why it could not be read,
/// or `None` when it was deleted.
pub type Content<'a> = Option<Result<&'a [u8], &'a str>>;

/// What applying a change did.
#[derive(Debug)]
pub struct Applied {
    /// The next snapshot; `None` when nothing the snapshot holds changed.
    pub snapshot: Option<Snapshot>,
    /// Documents applied.
    pub applied: Vec<String>,
    /// Documents rejected by this change, with their findings; each keeps
    /// its previous version.
    pub rejected: Vec<(String, Findings)>,
}

/// The store's documents as accepted, and the compiler of their snapshots.
#[derive(Debug)]
pub struct Workspace {
    compiler: Compiler,
    docs: BTreeMap<String, Accepted>,
    /// Documents whose current content is rejected, with why.
    held: BTreeMap<String, Findings>,
    index: CrossIndex,
    hasher: std::hash::RandomState,
    /// Findings below ERROR in the accepted documents, summed.
    warnings: usize,
}

/// Why the first load did not produce a workspace.
#[derive(Debug)]
pub enum LoadFailure {
    /// The store has errors: these are all its findings.
    Rejected(Findings),
    Compile(CompileError),
}

/// Why the first load of a directory did not produce a workspace.
#[derive(Debug)]
pub enum LoadDirFailure {
    /// The directory could not be listed.
    Dir(super::LoadError),
    Load(LoadFailure),
}

impl Workspace {
    /// Loads a whole store: its findings are those of `iamd validate`, and
    /// any ERROR rejects it. Returns the workspace, its snapshot and the
    /// findings (warnings at most).
    pub fn load<'a>(
        documents: impl IntoIterator<Item = (&'a str, Result<&'a [u8], &'a str>)>,
    ) -> Result<(Workspace, Snapshot, Findings), LoadFailure> {
        let documents: Vec<(&str, Result<&[u8], &str>)> = documents.into_iter().collect();
        let hasher = std::hash::RandomState::new();
        let (store, findings, keys) = super::parse_documents(&documents, Some(&hasher));
        let names = documents.iter().map(|(name, _)| (*name).to_owned());
        Workspace::from_parsed(hasher, names, store, findings, keys)
    }

    /// [`Workspace::load`] of a store directory, read file by file as
    /// `iamd validate` reads it.
    pub fn load_dir(
        dir: &std::path::Path,
    ) -> Result<(Workspace, Snapshot, Findings), LoadDirFailure> {
        let paths = super::list_files(dir).map_err(LoadDirFailure::Dir)?;
        let hasher = std::hash::RandomState::new();
        let (store, findings, keys) = super::parse_each(
            &paths,
            |path| super::relative(dir, path),
            |path, buf, text| text(super::read_file(path, buf)),
            Some(&hasher),
        );
        let names = paths.iter().map(|path| super::relative(dir, path));
        Workspace::from_parsed(hasher, names, store, findings, keys).map_err(LoadDirFailure::Load)
    }

    fn from_parsed(
        hasher: std::hash::RandomState,
        names: impl Iterator<Item = String>,
        store: Option<Store>,
        findings: Findings,
        keys: Vec<(DocKeys, u64)>,
    ) -> Result<(Workspace, Snapshot, Findings), LoadFailure> {
        let store = match store {
            Some(store) if !findings.has_errors() => store,
            _ => return Err(LoadFailure::Rejected(findings)),
        };
        let mut warnings: FxHashMap<&str, usize> = FxHashMap::default();
        for f in findings.iter() {
            *warnings.entry(&f.location.file).or_default() += 1;
        }
        let mut ws = Workspace {
            compiler: Compiler::new(),
            docs: BTreeMap::new(),
            held: BTreeMap::new(),
            index: CrossIndex::default(),
            hasher,
            warnings: findings.len(),
        };
        for (name, (keys, digest)) in names.zip(keys) {
            ws.index.add(&keys);
            let warnings = warnings.get(name.as_str()).copied().unwrap_or(0);
            ws.docs.insert(
                name,
                Accepted {
                    digest,
                    keys,
                    warnings,
                },
            );
        }
        ws.compiler.add_store(store);
        ws.compiler.set_accounts(ws.index.accounts.len());
        let snapshot = ws.compiler.snapshot().map_err(LoadFailure::Compile)?;
        Ok((ws, snapshot, findings))
    }

    /// Findings below ERROR in the accepted documents.
    pub fn warnings(&self) -> usize {
        self.warnings
    }

    /// Documents whose current content is rejected, with their findings.
    pub fn held(&self) -> &BTreeMap<String, Findings> {
        &self.held
    }

    /// Whether the workspace knows document `name` (accepted or held back).
    pub fn knows(&self, name: &str) -> bool {
        self.docs.contains_key(name) || self.held.contains_key(name)
    }

    /// Whether any known document is named below `prefix/`.
    pub fn knows_under(&self, prefix: &str) -> bool {
        let prefix = format!("{prefix}/");
        any_under(&self.docs, &prefix) || any_under(&self.held, &prefix)
    }

    /// Every known document's name (accepted or held back).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.docs.keys().chain(self.held.keys()).map(String::as_str)
    }

    fn digest(&self, content: Result<&[u8], &str>) -> u64 {
        match content {
            Ok(bytes) => self.hasher.hash_one(bytes),
            Err(why) => self.hasher.hash_one(("unreadable", why)),
        }
    }

    /// Applies the whole store as it now is: documents not listed are
    /// deleted, listed ones whose content did not change cost a hash.
    pub fn sync<'a>(
        &mut self,
        documents: impl IntoIterator<Item = (&'a str, Result<&'a [u8], &'a str>)>,
    ) -> Result<Applied, CompileError> {
        let mut changes: BTreeMap<&str, Content<'a>> = BTreeMap::new();
        for (name, content) in documents {
            changes.insert(name, Some(content));
        }
        let gone: Vec<String> = self
            .docs
            .keys()
            .chain(self.held.keys())
            .filter(|n| !changes.contains_key(n.as_str()))
            .cloned()
            .collect();
        let mut all: Vec<(String, Content<'a>)> = changes
            .into_iter()
            .map(|(n, c)| (n.to_owned(), c))
            .collect();
        all.extend(gone.into_iter().map(|n| (n, None)));
        self.apply(all.iter().map(|(n, c)| (n.as_str(), *c)))
    }

    /// Applies a change to the named documents. A document is rejected
    /// alone (keeping its previous version) when it has an ERROR or breaks
    /// a check across documents. On a [`CompileError`] the workspace is
    /// spent: load the store again.
    pub fn apply<'a>(
        &mut self,
        changes: impl IntoIterator<Item = (&'a str, Content<'a>)>,
    ) -> Result<Applied, CompileError> {
        // Parse what changed.
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut rejected: Vec<(String, Findings)> = Vec::new();
        for (name, content) in changes {
            let digest = content.map(|c| self.digest(c));
            let current = self.docs.get(name).map(|d| d.digest);
            if digest == current {
                // Back to the accepted version (or still absent).
                self.held.remove(name);
                continue;
            }
            let Some(content) = content else {
                self.held.remove(name);
                candidates.push(Candidate {
                    name: name.to_owned(),
                    digest: None,
                    store: Store::default(),
                    keys: DocKeys::default(),
                    warnings: 0,
                });
                continue;
            };
            let (store, findings) = parse_one(name, content);
            if findings.has_errors() {
                rejected.push((name.to_owned(), findings));
                continue;
            }
            let keys = DocKeys::of(&store);
            candidates.push(Candidate {
                name: name.to_owned(),
                digest,
                store,
                keys,
                warnings: findings.len(),
            });
        }

        // Check across documents until every remaining change passes.
        loop {
            for c in &candidates {
                if let Some(old) = self.docs.get(&c.name) {
                    self.index.remove(&old.keys);
                }
                self.index.add(&c.keys);
            }
            let mut failed = Vec::new();
            for (i, c) in candidates.iter().enumerate() {
                let old = self.docs.get(&c.name).map(|d| &d.keys);
                let mut findings = self.index.check(old, &c.keys);
                if findings.has_errors() {
                    if c.digest.is_none() {
                        // A deletion that breaks a reference: say so at the document.
                        findings = retarget(findings, &c.name);
                    }
                    failed.push((i, findings));
                }
            }
            if failed.is_empty() {
                break;
            }
            // Undo, drop the failures, and check the rest again.
            for c in &candidates {
                self.index.remove(&c.keys);
                if let Some(old) = self.docs.get(&c.name) {
                    self.index.add(&old.keys);
                }
            }
            for (i, findings) in failed.into_iter().rev() {
                let c = candidates.remove(i);
                rejected.push((c.name, findings));
            }
        }

        for (name, findings) in &rejected {
            self.held.insert(name.clone(), findings.clone());
        }
        if candidates.is_empty() {
            return Ok(Applied {
                snapshot: None,
                applied: Vec::new(),
                rejected,
            });
        }

        // Removals first: a key may move from one document to another.
        for c in &candidates {
            self.compiler.set_scps(&c.name, Vec::new());
            if let Some(old) = self.docs.get(&c.name) {
                for d in &old.keys.defined {
                    match d.kind {
                        Kind::User => self.compiler.remove_user(&d.account, &d.name),
                        Kind::Group => self.compiler.remove_group(&d.account, &d.name),
                        Kind::Role => self.compiler.remove_role(&d.account, &d.name),
                        Kind::Managed => self.compiler.remove_managed(&d.arn),
                        Kind::Resource => self.compiler.remove_resource_policy(&d.arn),
                    }
                }
            }
        }
        let mut applied = Vec::with_capacity(candidates.len());
        for c in candidates {
            self.held.remove(&c.name);
            // Its SCPs' source is this document, where they are written.
            self.compiler.add_document(c.store);
            let old = match c.digest {
                Some(digest) => self.docs.insert(
                    c.name.clone(),
                    Accepted {
                        digest,
                        keys: c.keys,
                        warnings: c.warnings,
                    },
                ),
                None => self.docs.remove(&c.name),
            };
            self.warnings = self.warnings + c.warnings - old.map_or(0, |d| d.warnings);
            applied.push(c.name);
        }
        self.compiler.set_accounts(self.index.accounts.len());
        Ok(Applied {
            snapshot: Some(self.compiler.snapshot()?),
            applied,
            rejected,
        })
    }

    /// The snapshot of the accepted documents (cheap: it shares everything).
    pub fn snapshot(&mut self) -> Result<Snapshot, CompileError> {
        self.compiler.snapshot()
    }

    /// The counts of the accepted store.
    pub fn stats(&mut self) -> Result<Stats, CompileError> {
        self.snapshot().map(|s| s.stats())
    }
}

fn any_under<V>(map: &BTreeMap<String, V>, prefix: &str) -> bool {
    map.range(prefix.to_owned()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(prefix))
}

/// A parsed change that has passed its own checks.
struct Candidate {
    name: String,
    /// `None`: the document was deleted.
    digest: Option<u64>,
    store: Store,
    keys: DocKeys,
    warnings: usize,
}

/// One document alone, with the checks that need only it.
fn parse_one(name: &str, content: Result<&[u8], &str>) -> (Store, Findings) {
    let mut findings = Findings::new();
    let read = content
        .map_err(str::to_owned)
        .and_then(|bytes| super::text(bytes, bytes.len() as u64));
    match read {
        Ok(text) => {
            let mut b = files::Builder::default();
            b.add_file(name, text, &mut findings);
            (b.into_document(&mut findings), findings)
        }
        Err(msg) => {
            findings.push(IssueCode::UnreadableFile, whole(name), msg);
            (Store::default(), findings)
        }
    }
}

fn whole(name: &str) -> Location {
    Location {
        file: Arc::from(name),
        path: "$".into(),
        line: 1,
        column: 1,
    }
}

/// The findings of a deleted document's removals, pointed at the document.
fn retarget(findings: Findings, name: &str) -> Findings {
    let mut out = Findings::new();
    for f in findings.iter() {
        out.push(
            f.issue_code,
            whole(name),
            format!("deleting this document is refused: {}", f.message),
        );
    }
    out
}
