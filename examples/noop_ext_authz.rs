//! A no-op Envoy ext_authz server: answers OK to every `Check` and reports
//! `grpc.health.v1` SERVING, nothing else. `benches/envoy_load.sh` runs it
//! beside iamd, behind the same Envoy configuration and the same load, as
//! the floor of what an ext_authz hop costs; iamd's CPU per `Check` and
//! added latency are reported against it.
//!
//! `cargo run --release --example noop_ext_authz -- 127.0.0.1:50052`

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            ..Default::default()
        }))
    }
}

// The same runtime iamd runs on: multi-threaded, a worker per core.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50052".into())
        .parse()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    // deploy/envoy/envoy.yaml health-checks the ext_authz cluster as iamd's service.
    for service in ["", "iamd.v1.Authorizer"] {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    // iamd sets TCP_NODELAY on its connections too.
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(AuthorizationServer::new(Noop))
        .serve(addr)
        .await?;
    Ok(())
}
