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
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
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
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster.wait_healthy(Duration::from_secs(60));
        cluster
    }

    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {i} runs already");
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
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

    /// Runs etcdctl (API v3) against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",");
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .args(["--command-timeout", "10s"])
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
