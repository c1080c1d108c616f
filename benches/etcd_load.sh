#!/usr/bin/env bash
# The etcd store backend against a real three-member etcd cluster (Debian's
# etcd-server, on loopback ports), with the synthetic store of
# benches/grpc_load.sh (about 100k statements by default):
#
# - loading: `iamd validate` (read, validate, compile) of the store from its
#   directory and from etcd, alternating, LOAD_ROUNDS times each;
# - pushing: `iamd store push` of the whole store into an empty prefix, and
#   again with nothing changed;
# - put to decision: two sidecars follow the store; ETCD_PUTS times, a
#   function policy is rewritten with `etcdctl put` (the same grant, a new
#   RevisionId, so every put is a change), and the time from the put's
#   return to an Authorize with `min_revision` set to the put's revision
#   answering on the second sidecar is taken: how soon a change is in force
#   on a sidecar that did not make it.
#
# Usage: benches/etcd_load.sh   (knobs: benches/load_common.sh; ETCD_PUTS,
#   default 200)
# Output: a markdown table on stdout, target/iamd-bench/etcd_load.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/load_common.sh
source benches/load_common.sh

ETCD_PUTS=${ETCD_PUTS:-200}
need cargo "a Rust toolchain, https://rustup.rs"
need python3 "Python 3 with grpcio, see tests/python/requirements.txt"
need etcd "Debian: apt-get install etcd-server (.ci/run installs it)"
need etcdctl "Debian: apt-get install etcd-client (.ci/run installs it)"

trap cleanup EXIT
trap 'exit 130' INT TERM
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iamd-etcd-load.XXXXXX")
mkdir -p "$OUT_DIR"
build_iamd
gen_store "$WORK/store"

# The cluster: three members, each with its own data directory.
CLIENT_PORTS=()
INITIAL=""
PEER_PORTS=()
for i in 0 1 2; do
  CLIENT_PORTS+=("$(free_port)")
  PEER_PORTS+=("$(free_port)")
  INITIAL+="${INITIAL:+,}m$i=http://127.0.0.1:${PEER_PORTS[$i]}"
done
ENDPOINTS=""
for i in 0 1 2; do
  ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${CLIENT_PORTS[$i]}"
  etcd --name "m$i" --data-dir "$WORK/etcd-m$i" \
    --listen-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
    --initial-cluster "$INITIAL" --initial-cluster-state new \
    --initial-cluster-token iamd-bench --log-level error --logger zap \
    >"$WORK/etcd-m$i.log" 2>&1 &
  PIDS+=("$!")
done
export ETCDCTL_API=3
for _ in $(seq 1 300); do
  if etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then break; fi
  sleep 0.1
done
etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1 || die "etcd did not become healthy"
URL="etcd://$ENDPOINTS/iamd"
log "etcd cluster at $ENDPOINTS"

TIMES="$WORK/times.tsv"
: >"$TIMES"
# timed NAME COMMAND...: runs it, appends NAME and its wall seconds.
timed() {
  local name=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@" >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out" >&2; die "$name failed"; }
  t1=$(date +%s.%N)
  printf '%s\t%s\n' "$name" "$(echo "$t1 - $t0" | bc)" >>"$TIMES"
}
log "iamd store push (an empty prefix, then the same store again)"
timed push "$IAMD" store push --store "$URL" "$WORK/store"
timed push_unchanged "$IAMD" store push --store "$URL" "$WORK/store"
for round in $(seq 1 "$LOAD_ROUNDS"); do
  log "load round $round: iamd validate from the directory and from etcd"
  timed load_dir "$IAMD" validate --store "$WORK/store"
  timed load_etcd "$IAMD" validate --store "$URL"
done

# start_sidecar NAME: an iamd following the store; its address in SIDECAR.
start_sidecar() {
  local port
  port=$(free_port)
  "$IAMD" serve --store "$URL" --grpc-addr "127.0.0.1:$port" --metrics-addr 127.0.0.1:0 \
    --max-revision-wait-ms 60000 --request-timeout-ms 60000 --log warn >"$WORK/iamd-$1.log" 2>&1 &
  PIDS+=("$!")
  SIDECAR="127.0.0.1:$port"
}
start_sidecar a
A=$SIDECAR
start_sidecar b
B=$SIDECAR
# (sed, not head: head would close the pipe early, and pipefail would stop the script)
POLICY=$(find "$WORK/store" -path '*/functions/*' -name '*.json' | sort | sed -n 1p)
[ -n "$POLICY" ] || die "the synthetic store has no function policy"
KEY="/iamd/${POLICY#"$WORK/store/"}"
log "put to decision: $ETCD_PUTS puts of $KEY, answered by $B"

python3 - "$A" "$B" "$POLICY" "$KEY" "$ENDPOINTS" "$ETCD_PUTS" "$TIMES" "$OUT_DIR/etcd_load.json" "$(machine_json)" "$STORE_SUMMARY" "$(etcd --version | head -n 1)" <<'EOF'
import json, statistics, subprocess, sys, time
import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

a, b, policy, key, endpoints, puts, times, out, machine, store, etcd_version = sys.argv[1:]
text = open(policy).read()
doc = json.loads(text)
arn = next(s["Resource"] for s in (doc["Policy"] if isinstance(doc["Policy"], dict) else json.loads(doc["Policy"]))["Statement"])
if isinstance(arn, list):
    arn = arn[0]

def stub(addr):
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=60)
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName("iamd.v1.Authorizer").FindMethodByName("Authorize")
    Request, Response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    call = channel.unary_unary("/iamd.v1.Authorizer/Authorize", request_serializer=Request.SerializeToString,
                               response_deserializer=Response.FromString)
    return Request, call

def wait_serving(addr):
    Request, call = stub(addr)
    deadline = time.time() + 300
    while True:
        try:
            return call(Request(principal="*", action="lambda:InvokeFunction", resource=arn), timeout=10).revision
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.time() > deadline:
                raise
            time.sleep(0.1)

wait_serving(a)
wait_serving(b)
Request, call = stub(b)
put_s, flip_s = [], []
for i in range(int(puts)):
    doc["RevisionId"] = f"bench-{i}"
    t0 = time.perf_counter()
    r = subprocess.run(["etcdctl", "--endpoints", endpoints, "put", key, json.dumps(doc), "-w", "json"],
                       check=True, capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    t1 = time.perf_counter()
    revision = json.loads(r.stdout)["header"]["revision"]
    resp = call(Request(principal="*", action="lambda:InvokeFunction", resource=arn, min_revision=revision), timeout=70)
    t2 = time.perf_counter()
    assert resp.revision >= revision, (resp.revision, revision)
    put_s.append(t1 - t0)
    flip_s.append(t2 - t1)

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * len(xs) + 0.5) - 1))]

timing = {}
for line in open(times):
    name, secs = line.split("\t")
    timing.setdefault(name, []).append(float(secs))
load_dir, load_etcd = statistics.median(timing["load_dir"]), statistics.median(timing["load_etcd"])
result = {
    "machine": dict(json.loads(machine), etcd=etcd_version), "store": store,
    "push_seconds": timing["push"][0], "push_unchanged_seconds": timing["push_unchanged"][0],
    "load_dir_seconds": timing["load_dir"], "load_etcd_seconds": timing["load_etcd"],
    "load_etcd_over_dir": load_etcd / load_dir,
    "puts": int(puts),
    "put_ms": {"p50": pct(put_s, 0.5) * 1e3, "p99": pct(put_s, 0.99) * 1e3},
    "put_to_decision_ms": {"p50": pct(flip_s, 0.5) * 1e3, "p99": pct(flip_s, 0.99) * 1e3, "max": max(flip_s) * 1e3},
    "method": "put_to_decision: from `etcdctl put` returning to an Authorize with min_revision = the put's revision answering on the second sidecar (it waits for the revision, --max-revision-wait-ms); load: median wall time of `iamd validate` (read, validate, compile)",
}
json.dump(result, open(out, "w"), indent=2)
print(f"### etcd store ({store.removeprefix('store OK: ').split(';')[0]}, {etcd_version}, 3 members on loopback)\n")
print("| measure | figure |")
print("|---|---:|")
print(f"| `iamd validate` from the directory (median of {len(timing['load_dir'])}) | {load_dir:.2f} s |")
print(f"| `iamd validate` from etcd (median of {len(timing['load_etcd'])}) | {load_etcd:.2f} s |")
print(f"| etcd / directory | {load_etcd / load_dir:.2f}x |")
print(f"| `iamd store push`, empty prefix | {timing['push'][0]:.2f} s |")
print(f"| `iamd store push`, nothing changed | {timing['push_unchanged'][0]:.2f} s |")
print(f"| `etcdctl put` (process included) p50 / p99 | {result['put_ms']['p50']:.1f} / {result['put_ms']['p99']:.1f} ms |")
print(f"| put to decision on the second sidecar p50 / p99 / max ({puts} puts) | {result['put_to_decision_ms']['p50']:.1f} / {result['put_to_decision_ms']['p99']:.1f} / {result['put_to_decision_ms']['max']:.1f} ms |")
print(f"\nwritten: {out}")
EOF
