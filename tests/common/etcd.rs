//! A real etcd cluster for the tests: three members of Debian's `etcd` on
//! loopback ports, each with its own data directory, started and stopped by
//! the test, and `etcdctl` against it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
    /// Serve clients over TLS with these files, and require client certificates.
    tls: Option<Tls>,
}

/// PEM files: a CA, the members' certificate (for IP 127.0.0.1) and a
/// client certificate, all signed by the CA.
#[derive(Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    /// Makes a CA and the certificates with the openssl command line
    /// (Debian's openssl, installed by .ci/run).
    pub fn generate(dir: &Path) -> Tls {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=iamd-test-ca",
            ],
        ]
        .concat());
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "iamd", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let subj = format!("/CN={cn}");
            let extfile = format!("{name}.ext");
            run(&[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        Tls {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, None)
    }

    /// Starts `n` members serving clients over TLS only, with client
    /// certificates required.
    pub fn start_tls(n: usize, tls: Tls) -> Cluster {
        Cluster::start_with(n, Some(tls))
    }

    fn start_with(n: usize, tls: Option<Tls>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            _dir: dir,
            members,
            initial,
            tls,
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster.wait_healthy(Duration::from_secs(60));
        cluster
    }

    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial.clone();
        let scheme = self.scheme();
        let mut tls_flags: Vec<std::ffi::OsString> = Vec::new();
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &tls.server_cert),
                ("--key-file", &tls.server_key),
                ("--trusted-ca-file", &tls.ca),
            ] {
                tls_flags.push(flag.into());
                tls_flags.push(path.into());
            }
            tls_flags.push("--client-cert-auth".into());
        }
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {i} runs already");
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(tls_flags)
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "iamd-test",
                // Elections within a second or so, as a test wants them.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--log-level",
                "error",
                "--logger",
                "zap",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server, installed by .ci/run)");
        m.child = Some(child);
    }

    /// Kills a member (SIGKILL: no goodbye to its peers or clients).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy(Duration::from_secs(60));
    }

    /// `h1:p1,h2:p2,...`
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `--store` value for a prefix.
    pub fn store(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoints())
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Runs etcdctl (API v3) against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let scheme = self.scheme();
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .args(["--command-timeout", "10s"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        command
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client, installed by .ci/run)")
    }

    /// Runs etcdctl and insists it succeeds; its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Puts a file's content at a key; the revision of the put.
    pub fn put_file(&self, key: &str, file: &Path) -> u64 {
        let value = std::fs::read_to_string(file).unwrap();
        self.put(key, &value)
    }

    /// Puts a value at a key; the revision of the put.
    pub fn put(&self, key: &str, value: &str) -> u64 {
        let out = self.ctl(&["put", key, value, "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_u64().unwrap()
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> u64 {
        let out = self.ctl(&["get", "--count-only", "x", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_u64().unwrap()
    }

    /// The index of the member that leads now.
    pub fn leader(&self) -> usize {
        let out = self.ctl(&["endpoint", "status", "--cluster", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for status in v.as_array().unwrap() {
            let leader = status["Status"]["leader"].as_u64();
            let me = status["Status"]["header"]["member_id"].as_u64();
            if leader.is_some() && leader == me {
                let endpoint = status["Endpoint"].as_str().unwrap();
                return self
                    .members
                    .iter()
                    .position(|m| endpoint.ends_with(&format!(":{}", m.client)))
                    .unwrap();
            }
        }
        panic!("no leader: {out}");
    }

    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
