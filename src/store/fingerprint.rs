//! A cheap fingerprint of a store tree, so a reload can tell whether the
//! tree changed while it was being read.
//!
//! It lists the files exactly as a load does ([`super::list_files`]: every
//! `*.json` below the directory, names starting with `.` skipped, visible
//! links followed, each real file once) and records, per file, the identity
//! and version the file system reports (device, inode, size, modification
//! and change times), plus the identity of the directory the path resolves
//! to. No file is opened. Two equal fingerprints taken before and after a
//! load mean the load read one consistent tree: a file replaced by rename
//! gets a new inode, a file rewritten in place a new size or times, a file
//! added or removed changes the list, and a directory replaced or swapped
//! (a rename swap, a ConfigMap `..data` link) changes the resolved inodes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{list_files, LoadError};

/// What the file system says about one file, or nothing when it vanished
/// between the listing and the `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Version {
    fn of(meta: &fs::Metadata) -> Version {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The state of a store tree; compare two with `==`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The directory the store path resolves to (device, inode).
    root: (u64, u64),
    files: Vec<(PathBuf, Option<Version>)>,
}

impl Fingerprint {
    /// Fingerprints the store directory `dir`. Fails as a load would when
    /// the directory cannot be read.
    pub fn of(dir: &Path) -> Result<Fingerprint, LoadError> {
        let root = fs::metadata(dir).map_err(|source| LoadError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let files = list_files(dir)?
            .into_iter()
            .map(|path| {
                let version = fs::metadata(&path).ok().map(|m| Version::of(&m));
                (path, version)
            })
            .collect();
        Ok(Fingerprint {
            root: (root.dev(), root.ino()),
            files,
        })
    }

    /// How many files the load would read.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Every file the load would read.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The files that are new or not the same as in `old` (every file
    /// without one): what a reload must read again.
    pub fn changed_since<'a>(&'a self, old: Option<&Fingerprint>) -> Vec<&'a Path> {
        let before: std::collections::HashMap<&Path, Option<Version>> = old
            .map(|o| o.files.iter().map(|(p, v)| (p.as_path(), *v)).collect())
            .unwrap_or_default();
        self.files
            .iter()
            .filter(|(p, v)| v.is_none() || before.get(p.as_path()) != Some(v))
            .map(|(p, _)| p.as_path())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const SCP: &str = r#"{"ServiceControlPolicies": []}"#;

    #[test]
    fn changes_with_every_edit_the_load_would_see_and_only_those() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("store");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.json"), SCP).unwrap();
        fs::write(dir.join("sub/b.json"), SCP).unwrap();
        let fp = || Fingerprint::of(&dir).unwrap();
        let first = fp();
        assert_eq!(first.files(), 2);
        assert_eq!(fp(), first, "an untouched tree fingerprints the same");

        // Files the load skips do not count.
        fs::write(dir.join("notes.txt"), "x").unwrap();
        fs::write(dir.join(".hidden.json"), SCP).unwrap();
        assert_eq!(fp(), first);

        // A rewrite in place (new size), a replacement by rename (new
        // inode, same size), a new file, a removed file.
        fs::write(dir.join("a.json"), format!("{SCP} ")).unwrap();
        let rewritten = fp();
        assert_ne!(rewritten, first);
        fs::write(dir.join("a.tmp"), format!("{SCP}\n")).unwrap();
        fs::rename(dir.join("a.tmp"), dir.join("a.json")).unwrap();
        let renamed = fp();
        assert_ne!(renamed, rewritten);
        fs::write(dir.join("sub/c.json"), SCP).unwrap();
        let added = fp();
        assert_eq!(added.files(), 3);
        fs::remove_file(dir.join("sub/b.json")).unwrap();
        let removed = fp();
        assert_eq!(removed.files(), 2);
        assert_ne!(removed, added);

        // The directory swapped for a copy holding the same files (hard
        // links: the same inodes and times).
        let copy = parent.path().join("store.new");
        fs::create_dir_all(copy.join("sub")).unwrap();
        for f in ["a.json", "sub/c.json"] {
            fs::hard_link(dir.join(f), copy.join(f)).unwrap();
        }
        let linked = fp();
        fs::rename(&dir, parent.path().join("store.old")).unwrap();
        fs::rename(&copy, &dir).unwrap();
        let swapped = fp();
        assert_eq!(swapped.files, linked.files, "the same files");
        assert_ne!(swapped, linked, "but another directory");

        // Gone: the load's own error.
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(Fingerprint::of(&dir), Err(LoadError::Dir { .. })));
    }

    #[test]
    fn follows_a_configmap_data_link_swap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("..v1")).unwrap();
        fs::write(root.join("..v1/f.json"), SCP).unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/f.json", root.join("f.json")).unwrap();
        let before = Fingerprint::of(root).unwrap();
        assert_eq!(before.files(), 1, "read once, through the visible link");

        fs::create_dir(root.join("..v2")).unwrap();
        fs::write(root.join("..v2/f.json"), SCP).unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_ne!(Fingerprint::of(root).unwrap(), before);
    }
}
