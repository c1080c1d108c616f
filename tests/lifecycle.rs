//! Start-up and shutdown against hostile timing and a hostile file system:
//! a SIGHUP the moment iamd starts, and `--uds` pointing at something that
//! is not iamd's socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::FileTypeExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{example_store, Iamd};

fn serve(extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iamd"));
    c.args(["serve", "--store"])
        .arg(example_store())
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A SIGHUP as soon as iamd says anything asks for a reload; it never kills
/// iamd. (Handlers used to be installed after the store's watch was set up,
/// which on a store of many folders left a window after "iamd listening".)
#[test]
fn sighup_right_after_start_does_not_kill() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&example_store(), dir.path());
    for i in 0..3000 {
        std::fs::create_dir_all(dir.path().join(format!("tree/{}/{i}", i % 50))).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(["serve", "--store"])
        .arg(dir.path())
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    let mut reloaded = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("store loaded") && line.contains("Signal") {
            reloaded = true;
            break;
        }
    }
    assert!(
        reloaded,
        "no reload after SIGHUP (first line: {first}); {:?}",
        child.try_wait()
    );
    assert!(child.try_wait().unwrap().is_none());
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    std::thread::spawn(move || lines.for_each(drop));
    assert!(child.wait().unwrap().success());
}

/// Runs iamd expecting it to refuse to start; a server that starts anyway is
/// killed after a while so the test fails rather than hangs.
fn refused(extra: &[&str]) -> std::process::Output {
    let child = serve(extra).spawn().unwrap();
    let pid = child.id().to_string();
    let (done, exited) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if exited.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    out
}

#[test]
fn uds_never_removes_what_is_not_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file is refused, and left as it was.
    let file = dir.path().join("data.sock");
    std::fs::write(&file, "precious").unwrap();
    let out = refused(&["--uds", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    // A socket someone listens on is refused and kept.
    let live = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let out = refused(&["--uds", live.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another process is listening"));
    assert!(std::fs::symlink_metadata(&live)
        .unwrap()
        .file_type()
        .is_socket());

    // A stale socket (its listener gone) is replaced, and removed at exit.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut iamd = Iamd::start_loaded(&example_store(), &["--uds", stale.to_str().unwrap()]);
    assert!(std::os::unix::net::UnixStream::connect(&stale).is_ok());
    iamd.signal("TERM");
    assert_eq!(iamd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!stale.exists(), "iamd removes its own socket");

    // A socket replaced while iamd ran is not iamd's to remove.
    let swapped = dir.path().join("swapped.sock");
    let mut iamd = Iamd::start_loaded(&example_store(), &["--uds", swapped.to_str().unwrap()]);
    std::fs::remove_file(&swapped).unwrap();
    std::fs::write(&swapped, "someone else's").unwrap();
    iamd.signal("TERM");
    assert_eq!(iamd.wait_exit(Duration::from_secs(15)), Some(0));
    assert_eq!(std::fs::read_to_string(&swapped).unwrap(), "someone else's");
}
