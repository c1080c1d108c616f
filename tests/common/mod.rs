//! Runs the real `iamd serve` binary for integration tests: free loopback
//! ports, JSON logs parsed for the bound addresses, and helpers for clients,
//! signals and `/metrics`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iamd::server::pb::authorizer_client::AuthorizerClient;
use iamd::server::pb::{self, ContextValues};
use serde_json::Value;
use tonic::transport::Channel;

pub mod deploy;
pub mod etcd;
pub mod hostile;

pub struct Iamd {
    child: Child,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub logs: Arc<Mutex<Vec<Value>>>,
}

pub fn example_store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store")
}

/// Copies a directory tree (the example store) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Reads `from` line by line on a thread of its own, handing each line to
/// `sink` until end of file or a read error: a child's stdout or stderr,
/// drained as it is written so the child never blocks on a full pipe.
pub fn pump_lines(from: impl Read + Send + 'static, mut sink: impl FnMut(String) + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            sink(line);
        }
    });
}

/// A gRPC channel to iamd over its Unix socket (`--uds`) at `path`. The
/// URI only fills in the `:authority`; every connection goes to `path`.
pub async fn uds_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

/// Writes a file atomically (write + rename), as a careful operator would.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Iamd {
    pub fn start(store: &Path, extra: &[&str]) -> Iamd {
        Iamd::start_with(Path::new(env!("CARGO_BIN_EXE_iamd")), store, extra)
    }

    /// Starts iamd through `program` (a wrapper script that sets limits, say).
    pub fn start_with(program: &Path, store: &Path, extra: &[&str]) -> Iamd {
        let mut child = Command::new(program)
            .args(["serve", "--store"])
            .arg(store)
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = logs.clone();
        pump_lines(stderr, move |line| {
            let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
            sink.lock().unwrap().push(v);
        });
        let mut me = Iamd {
            child,
            grpc: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            logs,
        };
        let listening = me
            .wait_for_log(Duration::from_secs(30), |v| {
                v["fields"]["message"] == "iamd listening"
            })
            .unwrap_or_else(|| panic!("iamd did not start: {:?}", me.logs.lock().unwrap()));
        me.grpc = listening["fields"]["grpc_addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        me.metrics = listening["fields"]["metrics_addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        me
    }

    /// Starts iamd and waits until it has loaded its first snapshot.
    pub fn start_loaded(store: &Path, extra: &[&str]) -> Iamd {
        let me = Iamd::start(store, extra);
        me.wait_for_log(Duration::from_secs(30), |v| {
            v["fields"]["message"] == "store loaded"
        })
        .unwrap_or_else(|| panic!("store did not load: {:?}", me.logs.lock().unwrap()));
        me
    }

    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.logs.lock().unwrap().iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn count_logs(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.logs.lock().unwrap().iter().filter(|v| pred(v)).count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> AuthorizerClient<Channel> {
        AuthorizerClient::new(self.channel().await)
    }

    /// `GET /metrics` as text.
    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{head}"
        );
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

impl Drop for Iamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn request(
    principal: &str,
    action: &str,
    resource: &str,
    context: &[(&str, &[&str])],
) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        principal: principal.into(),
        action: action.into(),
        resource: resource.into(),
        context: context
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    ContextValues {
                        values: v.iter().map(|s| (*s).to_owned()).collect(),
                    },
                )
            })
            .collect(),
        explain: false,
        ..Default::default()
    }
}

/// One parsed Prometheus sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the Prometheus text format strictly: every line must be a
/// comment (`# HELP` / `# TYPE`), blank, or `name{labels} value`.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            assert!(
                c.starts_with("HELP ") || c.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            if let Some(t) = c.strip_prefix("TYPE ") {
                let kind = t.split_whitespace().nth(1).unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label in: {line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the sample with this name and these labels (all must match).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}
