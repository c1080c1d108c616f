//! Compiles `proto/iamd/v1/authorizer.proto` with protox (a pure-Rust protobuf
//! compiler, so no system `protoc` is needed) and writes the descriptor set
//! that server reflection serves; compiles etcd's v3 API (`proto/etcd/`)
//! into the client stubs of the etcd store backend.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["iamd/v1/authorizer.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("iamd_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::server::codec::StrictCodec")
        .compile_fds(fds)?;
    let etcd = protox::compile(["rpc.proto"], ["proto/etcd"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
