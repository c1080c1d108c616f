//! Where a store lives (`--store`): a directory, the embedded default, or a
//! prefix of an etcd v3 cluster (`etcd://HOST:PORT[,HOST:PORT...]/PREFIX`),
//! and how to reach that cluster (TLS files, user and password).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use crate::finding::echo;

/// A `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Dir(PathBuf),
    Etcd(EtcdTarget),
}

/// An etcd cluster and the key prefix that holds the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// `host:port` of each member, as given.
    pub endpoints: Vec<String>,
    /// The prefix, with a leading `/` and no trailing one (`/iamd`): the
    /// document at relative path `P` is the key `{prefix}/P`.
    pub prefix: String,
}

/// A `--store` value that cannot name a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("`{}`: an etcd store is etcd://HOST:PORT[,HOST:PORT...]/PREFIX; the prefix is missing", echo(.0))]
    NoPrefix(String),
    #[error("`{}`: `{}` is not HOST:PORT", echo(url), echo(endpoint))]
    Endpoint { url: String, endpoint: String },
    #[error("`{}`: the prefix may not have empty, `.` or `..` parts, or parts starting with `.`", echo(.0))]
    Prefix(String),
    #[error(
        "`{}`: iamd reads a directory or etcd://; `{}://` is not supported",
        echo(url),
        echo(scheme)
    )]
    Scheme { url: String, scheme: String },
    #[error("the store location is empty")]
    Empty,
}

impl FromStr for StoreLocation {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(LocationError::Empty);
        }
        let Some(rest) = s.strip_prefix("etcd://") else {
            // Only a URL-looking value is refused; any other string is a path.
            if let Some((scheme, _)) = s.split_once("://") {
                if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(LocationError::Scheme {
                        url: s.to_owned(),
                        scheme: scheme.to_owned(),
                    });
                }
            }
            return Ok(StoreLocation::Dir(PathBuf::from(s)));
        };
        let Some((hosts, prefix)) = rest.split_once('/') else {
            return Err(LocationError::NoPrefix(s.to_owned()));
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        for endpoint in &endpoints {
            let valid = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(['/', '@', '?', '#'])
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(LocationError::Endpoint {
                    url: s.to_owned(),
                    endpoint: endpoint.clone(),
                });
            }
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(LocationError::NoPrefix(s.to_owned()));
        }
        if prefix
            .split('/')
            .any(|part| part.is_empty() || part.starts_with('.'))
        {
            return Err(LocationError::Prefix(s.to_owned()));
        }
        Ok(StoreLocation::Etcd(EtcdTarget {
            endpoints,
            prefix: format!("/{prefix}"),
        }))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Dir(path) => write!(f, "{}", path.display()),
            StoreLocation::Etcd(t) => write!(f, "etcd://{}{}", t.endpoints.join(","), t.prefix),
        }
    }
}

/// How to reach an etcd store: every flag has an `IAMD_ETCD_*` variable.
/// Ignored for a directory store.
#[derive(Clone, Default, Args)]
pub struct EtcdOptions {
    /// CA certificate (PEM) that signed the etcd members' certificates;
    /// turns on TLS.
    #[arg(long, env = "IAMD_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate auth; with --etcd-key.
    #[arg(long, env = "IAMD_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "IAMD_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (etcd's password auth); with --etcd-password.
    #[arg(long, env = "IAMD_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// The etcd user's password. Prefer the environment variable: a flag is
    /// visible in the process list.
    #[arg(
        long,
        env = "IAMD_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
}

// The password never reaches a log or a panic message.
impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("etcd_ca", &self.etcd_ca)
            .field("etcd_cert", &self.etcd_cert)
            .field("etcd_key", &self.etcd_key)
            .field("etcd_user", &self.etcd_user)
            .field(
                "etcd_password",
                &self.etcd_password.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(s: &str) -> EtcdTarget {
        match s.parse() {
            Ok(StoreLocation::Etcd(t)) => t,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn etcd_urls_name_members_and_a_prefix() {
        let t = etcd("etcd://h1:2379,h2:2379,10.0.0.3:2379/iamd");
        assert_eq!(t.endpoints, ["h1:2379", "h2:2379", "10.0.0.3:2379"]);
        assert_eq!(t.prefix, "/iamd");
        assert_eq!(etcd("etcd://127.0.0.1:2379/a/b/").prefix, "/a/b");
        assert_eq!(
            "etcd://h:1/a/b"
                .parse::<StoreLocation>()
                .unwrap()
                .to_string(),
            "etcd://h:1/a/b"
        );
    }

    #[test]
    fn anything_else_is_a_directory_and_bad_urls_say_why() {
        assert_eq!(
            "examples/store".parse(),
            Ok(StoreLocation::Dir("examples/store".into()))
        );
        assert_eq!(
            "./etcd:/x".parse(),
            Ok(StoreLocation::Dir("./etcd:/x".into()))
        );
        let err = |s: &str| s.parse::<StoreLocation>().unwrap_err().to_string();
        assert!(err("etcd://h:2379").contains("the prefix is missing"));
        assert!(err("etcd://h:2379/").contains("the prefix is missing"));
        assert!(err("etcd://h/iamd").contains("`h` is not HOST:PORT"));
        assert!(err("etcd://h:0/iamd").contains("is not HOST:PORT"));
        assert!(err("etcd://h:1,/iamd").contains("`` is not HOST:PORT"));
        assert!(err("etcd://h:1/a//b").contains("empty"));
        assert!(err("etcd://h:1/a/../b").contains("`..`"));
        assert!(err("consul://h:1/x").contains("`consul://` is not supported"));
        assert_eq!(err(""), "the store location is empty");
    }

    #[test]
    fn the_etcd_password_is_never_shown() {
        let options = EtcdOptions {
            etcd_user: Some("iamd".into()),
            etcd_password: Some("hunter2".into()),
            ..EtcdOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(
            shown.contains("iamd") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
