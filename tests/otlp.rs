//! Tracing export: with `--otlp-endpoint`, RPC spans reach a real OTLP/gRPC
//! collector (a tonic TraceService run by the test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{example_store, request, Iamd};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in &request.get_ref().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    spans.push(format!("{service} {}", s.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_are_exported_over_otlp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    // Flush batches quickly (standard OpenTelemetry SDK variable).
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let iamd = Iamd::start_loaded(
        &example_store(),
        &["--otlp-endpoint", &format!("http://{addr}")],
    );
    let mut client = iamd.client().await;
    client
        .authorize(request(
            "arn:aws:iam::111122223333:user/alice",
            "lambda:ListFunctions",
            "*",
            &[],
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans = collector.spans.lock().unwrap().clone();
        if spans
            .iter()
            .any(|s| s.contains("iamd") && s.ends_with("iamd.v1.Authorizer/Authorize"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Authorize span exported; got {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
