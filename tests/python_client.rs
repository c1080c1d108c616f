//! An independent client: Python grpcio (installed by `.ci/run`) learns the
//! API through server reflection and checks decisions against the real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{example_store, Iamd};

#[test]
fn python_grpcio_client_through_reflection() {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpc_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(iamd.grpc.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
}
