//! Helpers for the hostile-client tests: process memory and CPU from
//! `/proc`, a health probe, and a unary gRPC call with hand-made bytes.

use std::time::{Duration, Instant};

use super::Iamd;

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

pub async fn health_ok(iamd: &Iamd) -> Duration {
    let start = Instant::now();
    let mut health = tonic_health::pb::health_client::HealthClient::new(iamd.channel().await);
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.status, 1, "SERVING");
    start.elapsed()
}

/// A raw unary gRPC call with hand-made message bytes.
pub async fn raw_call(iamd: &Iamd, path: &'static str, message: Vec<u8>) -> tonic::Status {
    #[derive(Clone, Default)]
    struct Raw(Vec<u8>);
    impl prost::Message for Raw {
        fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
            buf.put_slice(&self.0);
        }
        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl bytes::Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
        fn encoded_len(&self) -> usize {
            self.0.len()
        }
        fn clear(&mut self) {
            self.0.clear();
        }
    }
    impl std::fmt::Debug for Raw {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Raw({} bytes)", self.0.len())
        }
    }
    let mut grpc = tonic::client::Grpc::new(iamd.channel().await)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    grpc.unary::<Raw, Raw, _>(
        tonic::Request::new(Raw(message)),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}
