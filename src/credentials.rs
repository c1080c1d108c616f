//! Callers' access keys (`--credentials PATH`), as DESIGN.md "Callers'
//! credentials and STS" defines them: a file, or a directory of `*.json`
//! files, each in the shape `aws iam create-access-key` prints
//! (`{"AccessKey": {...}}`) or a list of them under `"AccessKeys"`, with the
//! owner's account given by `"AccountId"` beside `UserName` or by a full
//! `"Arn"` (an IAM user's, or an account root's).
//!
//! Parsed once into typed keys: every problem is an error naming the file,
//! JSON path, line and column, and a file with any error is refused whole.
//! Secrets never leave this module in a printable form: [`Secret`] has no
//! `Display`, and its `Debug` is a mask, so a key logged by mistake shows
//! nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::json::{self, JsonPath, Node, Value};
use crate::policy::arn::{has_control, is_account_id, Arn};

/// Largest credentials file read.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// A secret access key. Compared and used only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// The secret itself, for deriving signing keys.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who an access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// An IAM user: its account, name and ARN.
    User {
        account: Box<str>,
        name: Box<str>,
        arn: Box<str>,
    },
    /// An account's root user.
    Root { account: Box<str> },
}

impl Owner {
    pub fn account(&self) -> &str {
        match self {
            Owner::User { account, .. } | Owner::Root { account } => account,
        }
    }

    /// The principal ARN a request signed with the key comes from.
    pub fn arn(&self) -> String {
        match self {
            Owner::User { arn, .. } => arn.to_string(),
            Owner::Root { account } => format!("arn:aws:iam::{account}:root"),
        }
    }
}

/// One access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: Box<str>,
    pub secret: Secret,
    pub owner: Owner,
    /// `Status: Inactive` keys are known but refused.
    pub active: bool,
    /// Where the key is defined: `file:line:column`.
    pub defined_at: Box<str>,
}

/// What a credentials file or directory holds.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    keys: BTreeMap<Box<str>, Arc<AccessKey>>,
}

/// A problem in a credentials file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {path}: {message}")]
pub struct CredentialsError {
    pub file: String,
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Why credentials could not be loaded: every error found.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the credentials `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credentials were refused with {} error(s); first: {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<CredentialsError>),
}

impl Credentials {
    /// Loads a file, or every `*.json` file below a directory (names
    /// starting with `.` skipped, as in the store).
    pub fn load(path: &Path) -> Result<Credentials, LoadError> {
        let read = |p: &Path| -> Result<String, LoadError> {
            let failed = |source| LoadError::Read {
                path: p.to_owned(),
                source,
            };
            let mut text = String::new();
            // At most one byte past the limit is read, whatever the file's size now.
            std::fs::File::open(p)
                .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
                .map_err(failed)?;
            if text.len() as u64 > MAX_FILE_BYTES {
                return Err(failed(std::io::Error::other(format!(
                    "the file is over {MAX_FILE_BYTES} bytes, the limit for credentials files"
                ))));
            }
            Ok(text)
        };
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut files = Vec::new();
        if meta.is_dir() {
            collect(path, path, &mut files)?;
        } else {
            let name = path.to_string_lossy().into_owned();
            files.push((name, path.to_owned()));
        }
        let mut texts = Vec::with_capacity(files.len());
        for (name, p) in files {
            texts.push((name, read(&p)?));
        }
        Credentials::from_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
            .map_err(LoadError::Invalid)
    }

    /// Parses credentials documents named `name`; every error comes back.
    pub fn from_texts<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Credentials, Vec<CredentialsError>> {
        let mut errors = Vec::new();
        let mut keys: BTreeMap<Box<str>, Arc<AccessKey>> = BTreeMap::new();
        for (name, text) in files {
            for key in parse_file(name, text, &mut errors) {
                if let Some(first) = keys.get(&key.id) {
                    errors.push(CredentialsError {
                        file: name.to_owned(),
                        path: "$".into(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "access key `{}` is defined twice (first at {})",
                            key.id, first.defined_at
                        ),
                    });
                    continue;
                }
                keys.insert(key.id.clone(), Arc::new(key));
            }
        }
        if errors.is_empty() {
            Ok(Credentials { keys })
        } else {
            Err(errors)
        }
    }

    /// The key with this id, active or not.
    pub fn get(&self, id: &str) -> Option<&Arc<AccessKey>> {
        self.keys.get(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Every visible `*.json` file below `dir`, sorted, named relative to `root`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut found: Vec<(PathBuf, std::fs::FileType)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, kind) in found {
        if kind.is_dir() {
            // A linked directory is not followed: a link loop cannot recurse.
            collect(root, &p, out)?;
        } else if p.extension().is_some_and(|e| e == "json") && !p.is_dir() {
            let name = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            out.push((name, p));
        }
    }
    Ok(())
}

/// The keys of one file; problems go to `errors`, and a file with any
/// yields none.
fn parse_file(name: &str, text: &str, errors: &mut Vec<CredentialsError>) -> Vec<AccessKey> {
    let before = errors.len();
    let mut error = |path: &JsonPath, node: Option<&Node>, message: String| {
        let pos = node.map(|n| n.pos);
        let path = path.to_string();
        errors.push(CredentialsError {
            file: name.to_owned(),
            path: if path.is_empty() { "$".into() } else { path },
            line: pos.map_or(1, |p| p.line),
            column: pos.map_or(1, |p| p.column),
            message,
        });
    };
    let root = match json::parse(text) {
        Ok(root) => root,
        Err(e) => {
            errors.push(CredentialsError {
                file: name.to_owned(),
                path: e.path,
                line: e.pos.line,
                column: e.pos.column,
                message: format!("not valid JSON: {}", e.message),
            });
            return Vec::new();
        }
    };
    let top = JsonPath::root();
    let mut found: Vec<(JsonPath, &Node)> = Vec::new();
    match (root.get("AccessKey"), root.get("AccessKeys")) {
        (Some(one), None) => found.push((top.key("AccessKey"), one)),
        (None, Some(list)) => match &list.value {
            Value::Array(items) => {
                found.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (top.key_index("AccessKeys", i), item)),
                );
            }
            other => error(
                &top.key("AccessKeys"),
                Some(list),
                format!("`AccessKeys` must be an array, found {}", other.kind()),
            ),
        },
        (Some(_), Some(_)) => error(
            &top,
            Some(&root),
            "a file holds `AccessKey` or `AccessKeys`, not both".into(),
        ),
        (None, None) => error(
            &top,
            Some(&root),
            "not a credentials file: expected `aws iam create-access-key` output ({\"AccessKey\": {...}}) or {\"AccessKeys\": [...]}".into(),
        ),
    }
    let mut keys = Vec::with_capacity(found.len());
    for (path, item) in &found {
        if let Some(key) = parse_key(name, path, item, &mut error) {
            keys.push(key);
        }
    }
    if errors.len() > before {
        Vec::new()
    } else {
        keys
    }
}

fn parse_key(
    name: &str,
    path: &JsonPath,
    item: &Node,
    error: &mut impl FnMut(&JsonPath, Option<&Node>, String),
) -> Option<AccessKey> {
    if item.members().is_none() {
        error(
            path,
            Some(item),
            format!(
                "an access key must be an object, found {}",
                item.value.kind()
            ),
        );
        return None;
    }
    let mut string = |key: &str, required: bool| -> Option<String> {
        match item.get(key) {
            None if required => {
                error(path, Some(item), format!("`{key}` is missing"));
                None
            }
            None => None,
            Some(n) => match n.as_str() {
                Some(s) if has_control(s) => {
                    error(
                        &path.key(key),
                        Some(n),
                        format!("`{key}` holds a control character"),
                    );
                    None
                }
                Some(s) => Some(s.to_owned()),
                None => {
                    error(
                        &path.key(key),
                        Some(n),
                        format!("`{key}` must be a string, found {}", n.value.kind()),
                    );
                    None
                }
            },
        }
    };
    let id = string("AccessKeyId", true);
    let secret = string("SecretAccessKey", true);
    let user = string("UserName", false);
    let status = string("Status", false);
    let account = string("AccountId", false);
    let arn = string("Arn", false);
    // Checked here, after every field was read, so one key reports all.
    let mut ok = true;
    if let Some(id) = &id {
        // IAM's own pattern for access key ids: [\w]+, 16 to 128 characters.
        let valid = (16..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            error(
                &path.key("AccessKeyId"),
                item.get("AccessKeyId"),
                "`AccessKeyId` must be 16 to 128 letters, digits or underscores".into(),
            );
            ok = false;
        }
    }
    if secret.as_deref().is_some_and(str::is_empty) {
        error(
            &path.key("SecretAccessKey"),
            item.get("SecretAccessKey"),
            "`SecretAccessKey` is empty".into(),
        );
        ok = false;
    }
    let active = match status.as_deref() {
        None | Some("Active") => true,
        Some("Inactive") => false,
        Some(other) => {
            error(
                &path.key("Status"),
                item.get("Status"),
                format!("`Status` must be `Active` or `Inactive`, not `{other}`"),
            );
            ok = false;
            true
        }
    };
    let owner = match (&arn, &account) {
        (Some(arn), _) => match owner_of_arn(arn) {
            Ok(owner) => {
                let clash = account.as_deref().is_some_and(|a| a != owner.account());
                let name_clash =
                    matches!((&owner, &user), (Owner::User { name, .. }, Some(u)) if **name != **u);
                if clash || name_clash {
                    error(
                        &path.key("Arn"),
                        item.get("Arn"),
                        "`Arn` names another account or user than `AccountId` and `UserName`"
                            .into(),
                    );
                    ok = false;
                }
                Some(owner)
            }
            Err(message) => {
                error(&path.key("Arn"), item.get("Arn"), message);
                None
            }
        },
        (None, Some(account)) if is_account_id(account) => match &user {
            Some(user) if !user.is_empty() && !user.contains('/') => Some(Owner::User {
                account: account.as_str().into(),
                name: user.as_str().into(),
                arn: format!("arn:aws:iam::{account}:user/{user}").into(),
            }),
            _ => {
                error(
                    path,
                    Some(item),
                    "`UserName` (a user name, no path) is needed beside `AccountId`".into(),
                );
                None
            }
        },
        (None, Some(_)) => {
            error(
                &path.key("AccountId"),
                item.get("AccountId"),
                "`AccountId` must be a 12-digit string".into(),
            );
            None
        }
        (None, None) => {
            error(
                path,
                Some(item),
                "the key's owner is unknown: give `AccountId` beside `UserName`, or the user's or root's full `Arn`".into(),
            );
            None
        }
    };
    let (id, secret, owner) = (id?, secret?, owner?);
    if !ok {
        return None;
    }
    let pos = item.pos;
    Some(AccessKey {
        id: id.into(),
        secret: Secret(secret.into()),
        owner,
        active,
        defined_at: format!("{name}:{}:{}", pos.line, pos.column).into(),
    })
}

/// The owner an `Arn` names: an IAM user (any path) or an account root.
fn owner_of_arn(arn: &str) -> Result<Owner, String> {
    let parsed = Arn::parse(arn).map_err(|e| format!("`Arn`: {e}"))?;
    if parsed.service != "iam" || !is_account_id(parsed.account) || !parsed.region.is_empty() {
        return Err(format!(
            "`Arn` must be an IAM user's or an account root's ARN (arn:aws:iam::ACCOUNT:user/NAME or arn:aws:iam::ACCOUNT:root), not `{arn}`"
        ));
    }
    if parsed.resource == "root" {
        return Ok(Owner::Root {
            account: parsed.account.into(),
        });
    }
    match parsed.resource.strip_prefix("user/") {
        Some(rest) => {
            let name = rest.rsplit('/').next().unwrap_or(rest);
            if name.is_empty() {
                return Err(format!("`Arn` `{arn}` has no user name"));
            }
            Ok(Owner::User {
                account: parsed.account.into(),
                name: name.into(),
                arn: arn.into(),
            })
        }
        None => Err(format!(
            "`Arn` must be an IAM user's or an account root's ARN, not `{arn}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = r#"{"AccessKey": {"UserName": "alice", "AccessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "Status": "Active", "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "CreateDate": "2026-11-30T10:00:00+00:00", "AccountId": "111122223333"}}"#;

    #[test]
    fn create_access_key_output_with_an_account_id_or_an_arn() {
        let list = r#"{"AccessKeys": [
            {"UserName": "bob", "AccessKeyId": "AKIAI44QH8DHBEXAMPLE", "Status": "Inactive",
             "SecretAccessKey": "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY", "Arn": "arn:aws:iam::444455556666:user/team/bob"},
            {"AccessKeyId": "AKIAROOTKEYEXAMPLE00", "SecretAccessKey": "s", "Arn": "arn:aws:iam::111122223333:root"}]}"#;
        let c = Credentials::from_texts([("alice.json", KEY), ("more.json", list)]).unwrap();
        assert_eq!(c.len(), 3);
        let alice = c.get("AKIAIOSFODNN7EXAMPLE").unwrap();
        assert!(alice.active);
        assert_eq!(alice.owner.arn(), "arn:aws:iam::111122223333:user/alice");
        assert_eq!(
            alice.secret.expose(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        );
        assert_eq!(&*alice.defined_at, "alice.json:1:15");
        let bob = c.get("AKIAI44QH8DHBEXAMPLE").unwrap();
        assert!(!bob.active);
        assert_eq!(
            bob.owner,
            Owner::User {
                account: "444455556666".into(),
                name: "bob".into(),
                arn: "arn:aws:iam::444455556666:user/team/bob".into()
            }
        );
        let root = c.get("AKIAROOTKEYEXAMPLE00").unwrap();
        assert_eq!(root.owner.arn(), "arn:aws:iam::111122223333:root");
        assert!(c.get("AKIAUNKNOWNEXAMPLE00").is_none());
    }

    #[test]
    fn a_secret_never_prints() {
        let c = Credentials::from_texts([("alice.json", KEY)]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }

    #[test]
    fn every_problem_is_named_with_its_place_and_the_file_refused() {
        let bad = r#"{"AccessKeys": [
  {"UserName": "a", "AccessKeyId": "short", "SecretAccessKey": "x", "AccountId": "111122223333"},
  {"UserName": "b", "AccessKeyId": "AKIAI44QH8DHBEXAMPLE", "SecretAccessKey": "x", "Status": "Revoked", "AccountId": "111122223333"},
  {"AccessKeyId": "AKIAI44QH8DHBEXAMPL2", "SecretAccessKey": "x"},
  {"AccessKeyId": "AKIAI44QH8DHBEXAMPL3", "SecretAccessKey": "x", "Arn": "arn:aws:iam::111122223333:role/r"},
  {"UserName": "e", "AccessKeyId": "AKIAI44QH8DHBEXAMPL4", "AccountId": "1111"},
  {"UserName": "f", "AccessKeyId": "AKIAI44QH8DHBEXAMPL5", "SecretAccessKey": "x", "Arn": "arn:aws:iam::444455556666:user/g"}
]}"#;
        let errors = Credentials::from_texts([("bad.json", bad)]).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let want = [
            "bad.json:2:36: AccessKeys[0].AccessKeyId: `AccessKeyId` must be 16 to 128 letters, digits or underscores",
            "bad.json:3:94: AccessKeys[1].Status: `Status` must be `Active` or `Inactive`, not `Revoked`",
            "bad.json:4:3: AccessKeys[2]: the key's owner is unknown",
            "bad.json:5:74: AccessKeys[3].Arn: `Arn` must be an IAM user's or an account root's ARN",
            "bad.json:6:3: AccessKeys[4]: `SecretAccessKey` is missing",
            "bad.json:6:73: AccessKeys[4].AccountId: `AccountId` must be a 12-digit string",
            "bad.json:7:91: AccessKeys[5].Arn: `Arn` names another account or user",
        ];
        assert_eq!(text.len(), want.len(), "{text:#?}");
        for (got, want) in text.iter().zip(want) {
            assert!(got.starts_with(want), "{text:#?}\n  wanted {want}");
        }
        // One bad key refuses its whole file; other files are not enough.
        let errors = Credentials::from_texts([("alice.json", KEY), ("bad.json", bad)]).unwrap_err();
        assert_eq!(errors.len(), want.len());
    }

    #[test]
    fn a_key_twice_and_a_file_of_another_shape_are_errors() {
        let errors = Credentials::from_texts([("a.json", KEY), ("b.json", KEY)]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .contains("`AKIAIOSFODNN7EXAMPLE` is defined twice (first at a.json:1:15)"),
            "{}",
            errors[0]
        );
        let errors =
            Credentials::from_texts([("x.json", r#"{"UserDetailList": []}"#)]).unwrap_err();
        assert!(
            errors[0].message.starts_with("not a credentials file"),
            "{}",
            errors[0]
        );
        let errors = Credentials::from_texts([("x.json", "{\"AccessKey\": ")]).unwrap_err();
        assert!(
            errors[0].message.starts_with("not valid JSON"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_directory_is_read_whole_and_hidden_names_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("team")).unwrap();
        std::fs::write(dir.path().join("team/alice.json"), KEY).unwrap();
        std::fs::write(dir.path().join(".alice.json.swp"), "{").unwrap();
        std::fs::write(dir.path().join("..data"), "{").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "{").unwrap();
        // A link back up is not followed (it would never end).
        std::os::unix::fs::symlink(dir.path(), dir.path().join("team/loop")).unwrap();
        let c = Credentials::load(dir.path()).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            &*c.get("AKIAIOSFODNN7EXAMPLE").unwrap().defined_at,
            "team/alice.json:1:15"
        );
        std::fs::write(dir.path().join("broken.json"), "[]").unwrap();
        let e = Credentials::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("broken.json:1:1"), "{e}");
        assert!(matches!(
            Credentials::load(&dir.path().join("missing")),
            Err(LoadError::Read { .. })
        ));
    }
}
