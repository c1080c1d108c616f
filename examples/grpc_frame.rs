//! Writes one framed gRPC request body to a file, for HTTP/2 load generators
//! such as h2load that send a fixed body (`benches/grpc_load.sh`).
//!
//! A gRPC message on the wire is a 5-byte prefix (a compression flag, 0, and
//! the message length as a big-endian u32) followed by the protobuf message.
//!
//! ```sh
//! cargo run --release --example grpc_frame -- authorize OUT    # /iamd.v1.Authorizer/Authorize
//! cargo run --release --example grpc_frame -- batch OUT [N]    # /iamd.v1.Authorizer/AuthorizeBatch, N requests (100)
//! cargo run --release --example grpc_frame -- health OUT       # /grpc.health.v1.Health/Check, service ""
//! ```
//!
//! The request is the `allow` probe of every generated store
//! (`iamd::synth::probe_requests()`): probe-alice may invoke f-1.

use iamd::server::pb::{AuthorizeBatchRequest, AuthorizeRequest};
use prost::Message;

type Error = Box<dyn std::error::Error>;

fn allow_probe() -> Result<AuthorizeRequest, Error> {
    let probe = iamd::synth::probe_requests()
        .into_iter()
        .find(|p| p.name == "allow")
        .ok_or("iamd::synth::probe_requests() has no `allow` probe")?;
    if !probe.context.is_empty() {
        return Err("the `allow` probe unexpectedly needs context keys".into());
    }
    Ok(AuthorizeRequest {
        principal: probe.principal,
        action: probe.action.to_owned(),
        resource: probe.resource,
        context: Default::default(),
        explain: false,
        ..Default::default()
    })
}

fn frame(message: &[u8]) -> Result<Vec<u8>, Error> {
    let len = u32::try_from(message.len())?;
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: grpc_frame authorize|batch|health OUT [BATCH_SIZE]";
    let kind = args.next().ok_or(usage)?;
    let out = args.next().ok_or(usage)?;
    let message = match kind.as_str() {
        "authorize" => allow_probe()?.encode_to_vec(),
        "batch" => {
            let n: usize = match args.next() {
                Some(n) => n.parse()?,
                None => 100,
            };
            let one = allow_probe()?;
            AuthorizeBatchRequest {
                requests: vec![one; n],
                ..Default::default()
            }
            .encode_to_vec()
        }
        "health" => tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }
        .encode_to_vec(),
        _ => return Err(usage.into()),
    };
    let body = frame(&message)?;
    std::fs::write(&out, &body)?;
    eprintln!(
        "{kind}: {} bytes ({} message + 5 prefix) -> {out}",
        body.len(),
        message.len()
    );
    Ok(())
}
