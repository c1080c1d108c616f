//! Hostile clients against the running binary: requests that would decode
//! into far more memory than they weigh, half-sent and silent connections,
//! idle floods past the descriptor limit, and expensive work that must not
//! starve health checks. Each case once broke iamd (issue 11).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::hostile::{cpu_ticks, health_ok, raw_call, rss_kib};
use common::{example_store, request, Iamd};
use iamd::server::pb;
use tonic::Code;

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const HELLO: &str = "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_refused_before_they_cost_more_than_their_size() {
    let iamd = Iamd::start_loaded(&example_store(), &["--max-message-bytes", "4194304"]);
    let before = rss_kib(iamd.pid());
    // 1,000,000 empty AuthorizeRequests: 2 MB on the wire, ~240 MB decoded.
    for _ in 0..8 {
        let e = raw_call(
            &iamd,
            "/iamd.v1.Authorizer/AuthorizeBatch",
            [0x0a, 0x00].repeat(1_000_000),
        )
        .await;
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("refused before decoding"),
            "{}",
            e.message()
        );
        assert!(
            e.message()
                .contains("AuthorizeBatchRequest.requests has more than 2000"),
            "{}",
            e.message()
        );
    }
    // A Check of 4 MiB of empty headers (a map entry is 2 bytes).
    let mut http = Vec::new();
    for _ in 0..1_000_000 {
        http.extend_from_slice(&[0x1a, 0x00]);
    }
    let nest = |field: u8, inner: &[u8]| {
        let mut out = vec![field];
        let mut len = inner.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(inner);
        out
    };
    let check = nest(0x0a, &nest(0x22, &nest(0x12, &http)));
    let e = raw_call(&iamd, "/envoy.service.auth.v3.Authorization/Check", check).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("headers has more than 256"),
        "{}",
        e.message()
    );
    let after = rss_kib(iamd.pid());
    assert!(
        after < before + 64 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    let samples = common::parse_prometheus(&iamd.metrics_text());
    let refused = common::sample(
        &samples,
        "iamd_admission_rejected_total",
        &[("reason", "limits")],
    );
    assert_eq!(
        refused,
        Some(9.0),
        "8 batches and 1 Check refused by the scan"
    );
    health_ok(&iamd).await;
}

/// Expensive requests run beside health checks and cheap decisions, never
/// in front of them, and a deadline bounds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_requests_do_not_starve_health_and_meet_their_deadline() {
    let iamd = Iamd::start_loaded(&example_store(), &["--request-timeout-ms", "3000"]);
    let batch = pb::AuthorizeBatchRequest {
        requests: vec![
            pb::AuthorizeRequest {
                explain: true,
                ..request(ALICE, "lambda:InvokeFunction", HELLO, &[])
            };
            1000
        ],
        ..Default::default()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let mut client = iamd.client().await;
        let batch = batch.clone();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut done = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.authorize_batch(batch.clone()).await {
                    Ok(_) => done += 1,
                    Err(e) => assert!(
                        matches!(e.code(), Code::DeadlineExceeded | Code::ResourceExhausted),
                        "{e:?}"
                    ),
                }
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    let mut client = iamd.client().await;
    for _ in 0..40 {
        worst = worst.max(health_ok(&iamd).await);
        let start = Instant::now();
        let r = client
            .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.decision(), pb::Decision::Allow);
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut batches = 0;
    for l in load {
        batches += l.await.unwrap();
    }
    assert!(batches > 0, "the batches ran too");
    // Generous for a shared 2-core CI machine; typically a few milliseconds.
    assert!(
        worst < Duration::from_millis(500),
        "a cheap call took {worst:?} behind the batches"
    );

    // A deadline shorter than the work: DEADLINE_EXCEEDED, never a partial answer.
    let quick = Iamd::start_loaded(&example_store(), &["--request-timeout-ms", "1"]);
    let e = quick
        .client()
        .await
        .authorize_batch(batch.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
}

/// Silent and slow connections are closed; an idle flood past the connection
/// and descriptor limits neither spins iamd nor locks out health and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_cannot_hold_iamd() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("iamd-256.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -n 256\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_iamd")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let iamd = Iamd::start_with(
        &script,
        &example_store(),
        &["--first-request-timeout-secs", "2"],
    );
    iamd.wait_for_log(Duration::from_secs(30), |v| {
        v["fields"]["message"] == "store loaded"
    })
    .unwrap();

    // 371 idle connections under a 256-descriptor limit.
    let mut idle = Vec::new();
    for _ in 0..371 {
        if let Ok(s) = TcpStream::connect(iamd.grpc) {
            idle.push(s);
        }
    }
    let ticks = cpu_ticks(iamd.pid());
    let start = Instant::now();
    for _ in 0..10 {
        health_ok(&iamd).await;
        assert!(iamd.metrics_text().contains("iamd_connections_open"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let used = (cpu_ticks(iamd.pid()) - ticks) as f64 / 100.0;
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        used < elapsed * 0.5,
        "iamd used {used:.2} s of CPU in {elapsed:.2} s: spinning"
    );

    // A client that connects and never speaks is closed after the first-request timeout.
    let mut silent = TcpStream::connect(iamd.grpc).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match silent.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue, // the server's SETTINGS frame
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );

    // Slowloris on /metrics: a request whose headers never end is closed.
    let mut slow = TcpStream::connect(iamd.metrics).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let _ = slow.read(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
    let samples = common::parse_prometheus(&iamd.metrics_text());
    let evicted = common::sample(
        &samples,
        "iamd_connections_evicted_total",
        &[("listener", "grpc")],
    )
    .unwrap();
    assert!(
        evicted >= 100.0,
        "idle connections were evicted to make room: {evicted}"
    );
    drop(idle);
}

/// Streams that send their headers and a little of a large message, then
/// stall, hold only what they sent, and only until their deadline; the
/// server advertises a stream limit and keeps answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_streams_hold_bounded_memory_until_their_deadline() {
    let iamd = Iamd::start_loaded(
        &example_store(),
        &[
            "--request-timeout-ms",
            "1500",
            "--max-message-bytes",
            "4194304",
        ],
    );
    let before = rss_kib(iamd.pid());
    let tcp = tokio::net::TcpStream::connect(iamd.grpc).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut streams = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let path = if i % 2 == 0 {
            "/iamd.v1.Authorizer/AuthorizeBatch"
        } else {
            "/envoy.service.auth.v3.Authorization/Check"
        };
        let req = http::Request::post(format!("http://{}{path}", iamd.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        match client.send_request(req, false) {
            Ok((response, mut body)) => {
                // A 5-byte frame header claiming 4 MiB, then 64 KiB of it.
                let mut data = vec![0u8, 0x00, 0x40, 0x00, 0x00];
                data.extend(std::iter::repeat_n(0x0a, 64 << 10));
                let _ = body.send_data(data.into(), false);
                streams.push((response, body));
            }
            Err(_) => refused += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = rss_kib(iamd.pid());
    health_ok(&iamd).await;
    // Every stalled stream ends with DEADLINE_EXCEEDED (or was never admitted).
    let mut deadline_exceeded = 0;
    for (response, _body) in streams {
        let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), response).await else {
            continue;
        };
        let status = r
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        if status.as_deref() == Some("4") {
            deadline_exceeded += 1;
        }
    }
    assert!(
        deadline_exceeded >= 50,
        "{deadline_exceeded} streams timed out, {refused} refused"
    );
    assert!(
        during < before + 96 * 1024,
        "100 stalled streams raised resident memory from {before} KiB to {during} KiB"
    );
    health_ok(&iamd).await;
}

/// A reload that rejects a file of tiny values (under the file size limit)
/// neither takes gigabytes nor keeps what it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_hostile_reload_gives_its_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&example_store(), dir.path());
    let iamd = Iamd::start_loaded(dir.path(), &["--reload-debounce-ms", "50"]);
    let before = rss_kib(iamd.pid());
    // 63 MB of `[0,0,...]`: decoded naively, over 3 GB.
    let mut zeros = String::with_capacity(63 << 20);
    zeros.push('[');
    while zeros.len() < (63 << 20) - 2 {
        zeros.push_str("0,");
    }
    zeros.push_str("0]");
    common::write_atomic(&dir.path().join("zeros.json"), &zeros);
    let rejected = iamd.wait_for_log(Duration::from_secs(60), |v| {
        v["fields"]["message"] == "document rejected; its last good version keeps serving"
            && v["fields"]["document"] == "zeros.json"
    });
    assert!(rejected.is_some(), "the hostile store was not rejected");
    let first = rejected.unwrap();
    assert!(
        first["fields"]["first_error"]
            .as_str()
            .unwrap_or_default()
            .contains("FILE_TOO_COMPLEX"),
        "{first}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(iamd.pid());
    eprintln!("rejected hostile reload: resident {before} KiB before, {after} KiB after");
    assert!(
        after < before + 64 * 1024,
        "resident memory went from {before} KiB to {after} KiB after the rejected reload"
    );
    health_ok(&iamd).await;
}
