# Shared by benches/grpc_load.sh and benches/envoy_load.sh (sourced, not run).
#
# Knobs (environment):
#   LOAD_DURATION     seconds measured per h2load run (default 2)
#   LOAD_WARMUP       seconds of warm-up before each measured run (default 1)
#   LOAD_ROUNDS       rounds per concurrency; the targets alternate order
#                     between rounds so drift on a shared machine hits all
#                     of them alike (default 4)
#   LOAD_CONCURRENCY  h2load client counts (default "1 16 64")
#   STORE_ACCOUNTS, STORE_FUNCTIONS, STORE_PRINCIPALS, STORE_SEED
#                     iamd gen-store parameters (default 10, 3000, 3600, 42:
#                     about 100k statements)
#   H2LOAD_THREADS    h2load -t (default 1)
#   H2LOAD_REQUESTS   if set, counted runs of this many requests instead of
#                     timed ones (benches/envoy_load.sh sets it for HTTP/1.1)
#   IAMD_BIN          an iamd binary to measure instead of building
#                     target/release/iamd (an A/B of two builds, say)
# shellcheck shell=bash

LOAD_DURATION=${LOAD_DURATION:-2}
LOAD_WARMUP=${LOAD_WARMUP:-1}
LOAD_ROUNDS=${LOAD_ROUNDS:-4}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-"1 16 64"}
STORE_ACCOUNTS=${STORE_ACCOUNTS:-10}
STORE_FUNCTIONS=${STORE_FUNCTIONS:-3000}
STORE_PRINCIPALS=${STORE_PRINCIPALS:-3600}
STORE_SEED=${STORE_SEED:-42}
H2LOAD_THREADS=${H2LOAD_THREADS:-1}

IAMD=${IAMD_BIN:-target/release/iamd}
# shellcheck disable=SC2034 # used by the scripts that source this file
OUT_DIR=target/iamd-bench

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# need TOOL HINT: fail with a clear message when TOOL is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed ($2)"
}

# h2load comes from Debian's nghttp2-client; install it when we can.
ensure_h2load() {
  if command -v h2load >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "h2load missing: apt-get install nghttp2-client"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
      die "apt-get update failed; install nghttp2-client (h2load) by hand"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null ||
      die "apt-get install nghttp2-client failed; install h2load by hand"
  fi
  need h2load "Debian/Ubuntu: apt-get install nghttp2-client"
}

check_common_tools() {
  need cargo "a Rust toolchain, https://rustup.rs"
  need python3 "Python 3 with grpcio, see tests/python/requirements.txt"
  python3 -c 'import grpc, grpc_health.v1, grpc_reflection' 2>/dev/null ||
    die "python3 needs grpcio, grpcio-health-checking and grpcio-reflection (pip install -r tests/python/requirements.txt)"
  ensure_h2load
}

# Processes to stop on exit, by pid.
PIDS=()
WORK=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    rm -rf "$WORK"
  fi
}

# A free loopback TCP port (bound and released; the kernel does not hand it
# out again right away).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

build_iamd() {
  if [ -n "${IAMD_BIN:-}" ]; then
    log "measuring $IAMD_BIN (IAMD_BIN), not a fresh build"
    return
  fi
  log "cargo build --release --locked"
  cargo build --release --locked
}

# gen_store DIR: the synthetic store; prints its size.
gen_store() {
  log "iamd gen-store --accounts $STORE_ACCOUNTS --functions-per-account $STORE_FUNCTIONS --principals $STORE_PRINCIPALS --seed $STORE_SEED"
  "$IAMD" gen-store --accounts "$STORE_ACCOUNTS" --functions-per-account "$STORE_FUNCTIONS" \
    --principals "$STORE_PRINCIPALS" --seed "$STORE_SEED" --out "$1" >&2
  STORE_SUMMARY=$("$IAMD" validate --store "$1" | tail -n 1)
  log "store: $STORE_SUMMARY"
}

# start_iamd STORE GRPC_PORT METRICS_PORT [FLAGS...]: starts the sidecar and
# waits until grpc.health.v1 says SERVING (the store has loaded).
start_iamd() {
  local store=$1 grpc_port=$2 metrics_port=$3
  shift 3
  "$IAMD" serve --store "$store" --grpc-addr "127.0.0.1:$grpc_port" \
    --metrics-addr "127.0.0.1:$metrics_port" --log warn "$@" >"$WORK/iamd.log" 2>&1 &
  IAMD_PID=$!
  PIDS+=("$IAMD_PID")
  log "iamd serve (pid $IAMD_PID) on 127.0.0.1:$grpc_port, metrics 127.0.0.1:$metrics_port"
  python3 - "127.0.0.1:$grpc_port" "$IAMD_PID" <<'EOF' || { cat "$WORK/iamd.log" >&2; die "iamd did not become SERVING within 120 s"; }
import os, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
addr, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 120
channel = grpc.insecure_channel(addr)
stub = health_pb2_grpc.HealthStub(channel)
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("iamd exited")
    try:
        r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        if r.status == health_pb2.HealthCheckResponse.SERVING:
            sys.exit(0)
    except grpc.RpcError:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}

# metrics_snapshot PORT FILE: iamd's Prometheus counters, as JSON.
metrics_snapshot() {
  python3 - "$1" >"$2" <<'EOF'
import json, re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
out = {}
for line in text.splitlines():
    m = re.match(r'^(iamd_(?:decisions_total|requests_rejected_total|snapshot_statements)(?:\{[^}]*\})?) (\S+)$', line)
    if m:
        out[m.group(1)] = float(m.group(2))
print(json.dumps(out))
EOF
}

# h2load_run TARGET CONCURRENCY ROUND URL [H2LOAD ARGS...]: one run.
# Timed (default): LOAD_WARMUP s of warm-up, then LOAD_DURATION s measured;
# h2load logs only the measured phase. Counted (H2LOAD_REQUESTS=N, needed
# for HTTP/1.1: h2load 1.52 can hang when a timed --h1 run stops): a warm-up
# run of N/10 requests, then N requests measured. h2load's per-request log
# (start, status, microseconds to the end of the response) gives the
# percentiles.
MANIFEST=""
H2LOAD_REQUESTS=${H2LOAD_REQUESTS:-}
h2load_run() {
  local target=$1 c=$2 round=$3 url=$4
  shift 4
  local base="$WORK/runs/$target-c$c-r$round" limit
  mkdir -p "$WORK/runs"
  log "h2load $target c=$c round $round"
  local common=(-c "$c" -m 1 -t "$H2LOAD_THREADS")
  if [ -n "$H2LOAD_REQUESTS" ]; then
    # The hard timeouts only guard against a hung h2load.
    timeout 120 h2load -n $(((H2LOAD_REQUESTS / 10) > c ? H2LOAD_REQUESTS / 10 : c)) "${common[@]}" \
      "$@" "$url" >"$base.warmup" 2>&1 ||
      { cat "$base.warmup" >&2; die "h2load (warm-up) failed for $target c=$c"; }
    limit=(-n "$H2LOAD_REQUESTS")
  else
    limit=(-D "$LOAD_DURATION" --warm-up-time "$LOAD_WARMUP")
  fi
  timeout $((LOAD_DURATION + LOAD_WARMUP + 120)) \
    h2load "${limit[@]}" "${common[@]}" --log-file "$base.tsv" "$@" "$url" >"$base.out" 2>&1 ||
    { cat "$base.out" >&2; die "h2load failed for $target c=$c"; }
  local seconds
  if ! seconds=$(
    python3 - "$base.out" "$base.tsv" "$c" "${H2LOAD_REQUESTS:-0}" "$LOAD_DURATION" <<'EOF'
import re, sys
out, tsv, c, counted, duration = sys.argv[1:]
text = open(out).read()
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
f = re.search(r"finished in ([\d.]+)(ms|s),", text)
if not m or not s or not f:
    sys.exit("cannot parse h2load output")
total, started, done, ok, failed, errored, timeout = map(int, m.groups())
_, s3, s4, s5 = map(int, s.groups())
if done == 0 or failed or errored or timeout or s3 or s4 or s5:
    sys.exit(f"done={done} failed={failed} errored={errored} timeout={timeout} status codes {s.group(0)}")
if int(counted) and done != int(counted):
    sys.exit(f"{done} of {counted} requests done")
# Status 0: a request cut off when a timed run's measured phase ended (at
# most one per client); the statistics leave those out.
statuses = [l.split("\t")[1] for l in open(tsv) if l.strip()]
if set(statuses) - {"200", "0"} or statuses.count("0") > int(c):
    sys.exit(f"HTTP statuses in the per-request log: {sorted(set(statuses))}, {statuses.count('0')} cut off")
# The measured time: the duration of a timed run, h2load's wall time for a counted one.
print(float(f.group(1)) / (1000 if f.group(2) == "ms" else 1) if int(counted) else float(duration))
EOF
  ); then
    cat "$base.out" >&2
    die "h2load reported failures for $target c=$c"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$c" "$round" "$base" "$seconds" >>"$MANIFEST"
}

# summarize: per target and concurrency, pooled over rounds: requests/s (the
# measured requests over the measured time), and mean, p50, p99 of h2load's
# per-request times. Prints JSON.
summarize() {
  python3 - "$MANIFEST" <<'EOF'
import json, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    target, c, rnd, base, seconds = line.rstrip("\n").split("\t")
    runs[(target, int(c))].append((base, float(seconds)))
def pct(xs, p):  # nearest rank
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
    return xs[k]
out = []
for (target, c), bases in runs.items():
    lat, per_round, total_s = [], [], 0.0
    for b, seconds in bases:
        xs = [int(f[2]) for f in (l.split("\t") for l in open(b + ".tsv")) if len(f) >= 3 and f[1] == "200"]
        lat += xs
        per_round.append(len(xs) / seconds)
        total_s += seconds
    lat.sort()
    out.append({
        "target": target, "concurrency": c, "rounds": len(bases),
        "requests": len(lat), "seconds": round(total_s, 3),
        "rps": len(lat) / total_s,
        "rps_per_round": [round(r, 1) for r in per_round],
        "mean_us": sum(lat) / len(lat), "p50_us": pct(lat, 50),
        "p99_us": pct(lat, 99), "max_us": lat[-1],
    })
print(json.dumps(out))
EOF
}

machine_json() {
  python3 - "$(nproc)" <<'EOF'
import json, platform, re, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "unknown")
def run(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""
print(json.dumps({
    "nproc": int(sys.argv[1]), "cpu": cpu, "mem_total": mem, "kernel": platform.release(),
    "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    "h2load": run("h2load", "--version"), "git_rev": run("git", "rev-parse", "--short", "HEAD"),
}))
EOF
}
