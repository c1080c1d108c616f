#!/usr/bin/env bash
# Load test of iamd's gRPC API with h2load, on loopback.
#
# Builds iamd (release), generates a synthetic store (about 100k statements),
# starts `iamd serve`, and drives three unary RPCs on the same server at each
# concurrency (h2load clients, one stream each):
#   /iamd.v1.Authorizer/Authorize        one Allow decision (probe-alice may invoke f-1)
#   /iamd.v1.Authorizer/AuthorizeBatch   BATCH_SIZE of the same request
#   /grpc.health.v1.Health/Check         no work: the ceiling of a unary RPC
# and reports requests/s, mean, p50 and p99 latency, and the ratios
# Authorize/Health (throughput, target >= 0.8; p99, target <= 1.25).
#
# Usage: benches/grpc_load.sh   (knobs: see benches/load_common.sh; BATCH_SIZE, default 100)
# Output: a markdown table on stdout, target/iamd-bench/grpc_load.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/load_common.sh
source benches/load_common.sh

BATCH_SIZE=${BATCH_SIZE:-100}

check_common_tools
trap cleanup EXIT
trap 'exit 130' INT TERM
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iamd-grpc-load.XXXXXX")
MANIFEST="$WORK/manifest.tsv"
: >"$MANIFEST"
mkdir -p "$OUT_DIR"

build_iamd
log "cargo build --release --locked --example grpc_frame"
cargo build --release --locked --example grpc_frame
FRAME=target/release/examples/grpc_frame
T0=$SECONDS
"$FRAME" authorize "$WORK/authorize.bin"
"$FRAME" batch "$WORK/batch.bin" "$BATCH_SIZE"
"$FRAME" health "$WORK/health.bin"

MACHINE=$(machine_json)
gen_store "$WORK/store"
GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
start_iamd "$WORK/store" "$GRPC_PORT" "$METRICS_PORT"

# h2load cannot see trailers (grpc-status); send the very bodies h2load will
# send through a real gRPC client once and check status OK and the answers.
log "checking the request bodies with a Python gRPC client"
python3 - "127.0.0.1:$GRPC_PORT" "$WORK" "$BATCH_SIZE" <<'EOF'
import sys
import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
addr, work, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
channel = grpc.insecure_channel(addr)
pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
service = pool.FindServiceByName("iamd.v1.Authorizer")
ALLOW = pool.FindEnumTypeByName("iamd.v1.Decision").values_by_name["ALLOW"].number
def call(path, body_file, response_class):
    body = open(f"{work}/{body_file}", "rb").read()
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5, "bad gRPC frame"
    rpc = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=response_class.FromString)
    response, c = rpc.with_call(body[5:], timeout=10)  # raises unless grpc-status is 0
    assert c.code() == grpc.StatusCode.OK, c.code()
    return response
r = call("/iamd.v1.Authorizer/Authorize", "authorize.bin", GetMessageClass(service.FindMethodByName("Authorize").output_type))
assert r.decision == ALLOW, r
b = call("/iamd.v1.Authorizer/AuthorizeBatch", "batch.bin", GetMessageClass(service.FindMethodByName("AuthorizeBatch").output_type))
assert len(b.responses) == batch and all(x.decision == ALLOW for x in b.responses), b
h = call("/grpc.health.v1.Health/Check", "health.bin", health_pb2.HealthCheckResponse)
assert h.status == health_pb2.HealthCheckResponse.SERVING, h
print(f"grpc-status OK: Authorize ALLOW (revision {r.revision}), AuthorizeBatch {batch} x ALLOW, Health SERVING", file=sys.stderr)
EOF

metrics_snapshot "$METRICS_PORT" "$WORK/metrics-before.json"
URL="http://127.0.0.1:$GRPC_PORT"
GRPC_HEADERS=(--header 'content-type: application/grpc' --header 'te: trailers')
run_target() {
  local target=$1 c=$2 round=$3
  case $target in
  health) h2load_run health "$c" "$round" "$URL/grpc.health.v1.Health/Check" "${GRPC_HEADERS[@]}" -d "$WORK/health.bin" ;;
  authorize) h2load_run authorize "$c" "$round" "$URL/iamd.v1.Authorizer/Authorize" "${GRPC_HEADERS[@]}" -d "$WORK/authorize.bin" ;;
  batch) h2load_run batch "$c" "$round" "$URL/iamd.v1.Authorizer/AuthorizeBatch" "${GRPC_HEADERS[@]}" -d "$WORK/batch.bin" ;;
  esac
}
for c in $LOAD_CONCURRENCY; do
  for round in $(seq 1 "$LOAD_ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="health authorize batch"; else order="batch authorize health"; fi
    for target in $order; do
      run_target "$target" "$c" "$round"
    done
  done
done
metrics_snapshot "$METRICS_PORT" "$WORK/metrics-after.json"
kill -0 "$IAMD_PID" 2>/dev/null || die "iamd exited during the run"

summarize >"$WORK/stats.json"
python3 - "$WORK" "$MACHINE" "$STORE_SUMMARY" "$BATCH_SIZE" "$OUT_DIR/grpc_load.json" "$LOAD_DURATION" "$LOAD_WARMUP" "$LOAD_ROUNDS" "$H2LOAD_THREADS" "${H2LOAD_REQUESTS:-}" <<'EOF'
import json, sys
work, machine, store, batch, out, duration, warmup, rounds, threads, counted = sys.argv[1:]
batch = int(batch)
stats = json.load(open(f"{work}/stats.json"))
before = json.load(open(f"{work}/metrics-before.json"))
after = json.load(open(f"{work}/metrics-after.json"))
delta = {k: after[k] - before.get(k, 0) for k in after if "snapshot" not in k}
# Every decision made under load must be an Allow and nothing rejected: h2load
# sees only HTTP 200, this sees the grpc-status and the decisions.
bad = {k: v for k, v in delta.items() if v and ("deny" in k or "rejected" in k)}
if bad:
    sys.exit(f"iamd made denies or rejected requests under load: {bad}")
logged = {t: sum(s["requests"] for s in stats if s["target"] == t) for t in ("authorize", "batch")}
allow_a = delta.get('iamd_decisions_total{api="authorize",decision="allow"}', 0)
allow_b = delta.get('iamd_decisions_total{api="authorize_batch",decision="allow"}', 0)
if allow_a < logged["authorize"] or allow_b < logged["batch"] * batch:
    sys.exit(f"fewer Allow decisions than requests: {allow_a} < {logged['authorize']} or {allow_b} < {logged['batch'] * batch}")
by = {(s["target"], s["concurrency"]): s for s in stats}
rows, ratios = [], []
for c in sorted({s["concurrency"] for s in stats}):
    h, a, b = by[("health", c)], by[("authorize", c)], by[("batch", c)]
    ratios.append({
        "concurrency": c,
        "authorize_over_health_rps": a["rps"] / h["rps"],
        "authorize_over_health_rps_per_round": [round(x / y, 2) for x, y in zip(a["rps_per_round"], h["rps_per_round"])],
        "authorize_over_health_p99": a["p99_us"] / h["p99_us"],
        "batch_decisions_per_s": b["rps"] * batch,
        "throughput_target_met": a["rps"] / h["rps"] >= 0.8,
        "p99_target_met": a["p99_us"] / h["p99_us"] <= 1.25,
    })
    b["decisions_per_s"] = b["rps"] * batch
result = {
    "machine": json.loads(machine), "store": store, "batch_size": batch,
    "method": {"tool": "h2load", "streams_per_client": 1, "h2load_threads": int(threads),
               **({"requests_per_run": int(counted), "warmup_requests_per_run": int(counted) // 10} if counted else
                  {"measured_seconds_per_run": float(duration), "warmup_seconds_per_run": float(warmup)}),
               "rounds": int(rounds), "latency": "h2load --log-file per-request time to end of response, pooled over rounds; nearest-rank percentiles"},
    "results": sorted(stats, key=lambda s: (s["concurrency"], s["target"])),
    "ratios": ratios, "iamd_metric_deltas": delta,
}
json.dump(result, open(out, "w"), indent=2)
ms = lambda us: f"{us / 1000:.3f}"
print(f"### iamd gRPC load (h2load, {store.removeprefix('store OK: ').split(';')[0]})\n")
print("| target | clients | requests/s | decisions/s | mean ms | p50 ms | p99 ms | req/s per round |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for s in result["results"]:
    dps = s["rps"] * (batch if s["target"] == "batch" else 1) if s["target"] != "health" else None
    name = {"health": "Health/Check", "authorize": "Authorize", "batch": f"AuthorizeBatch ({batch})"}[s["target"]]
    print(f"| {name} | {s['concurrency']} | {s['rps']:.0f} | {'' if dps is None else f'{dps:.0f}'} | {ms(s['mean_us'])} | {ms(s['p50_us'])} | {ms(s['p99_us'])} | {', '.join(f'{r:.0f}' for r in s['rps_per_round'])} |")
print("\n| clients | Authorize / Health throughput (target >= 0.8) | Authorize / Health p99 (target <= 1.25) | throughput ratio per round |")
print("|---:|---:|---:|---|")
for r in ratios:
    ok = lambda v: "met" if v else "NOT met"
    print(f"| {r['concurrency']} | {r['authorize_over_health_rps']:.2f} ({ok(r['throughput_target_met'])}) | {r['authorize_over_health_p99']:.2f} ({ok(r['p99_target_met'])}) | {', '.join(f'{x:.2f}' for x in r['authorize_over_health_rps_per_round'])} |")
print(f"\nwritten: {out}")
EOF
log "done: $((SECONDS - T0)) s after the build"
