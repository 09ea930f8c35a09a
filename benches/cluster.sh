#!/usr/bin/env bash
# Cross-node cost of the cluster, measured in one session against Mosquitto and against
# one shoal node alone, so that the ratios compare runs on the same (noisy) machine.
#
#     cargo build --release -p shoal-broker -p shoal-loadtest
#     DURATION=10s OUT=benches/cluster.md benches/cluster.sh
#
# Brokers (each started on free loopback ports, stopped by PID):
#   mosquitto       Mosquitto alone
#   shoal           one shoal node, no cluster
#   cluster-same    a 3-node shoal cluster, every client on node 1 (what membership costs)
#   cluster-cross   the same cluster, publishers and subscribers on different nodes
#                   (shoal-loadtest --placement cross): every message crosses nodes
# CPU per message is the sum over all the broker's processes (--broker-pid repeated).
# Then an idle 3-node cluster: CPU and RSS of each node over IDLE_SECS (default 20).
#
# Then connects per second (each CONNECT claims its client id: a Raft write in a cluster),
# SUBACK latency of new filters and new filters (route writes) per second under churn
# (benches/route_writes.py against node 2), shoal alone against the 3-node cluster with
# clients spread over its nodes; the cluster first settles SETTLE_SECS so that its
# leaderships are spread.
#
# Environment: DURATION (10s), SCENARIOS (pairs-max-qos0 pairs-max-qos1 latency-20k-qos0
# latency-20k-qos1), OUT (benches/cluster.md), IDLE_SECS (20), CONNECTS (6000),
# SETTLE_SECS (12), SKIP_RUNS (set: only the idle measurement and the report, from the
# results of an earlier run), SKIP_SCENARIOS (set: no pairs scenarios).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
OUT=${OUT:-benches/cluster.md}
IDLE_SECS=${IDLE_SECS:-20}
CONNECTS=${CONNECTS:-6000}
SETTLE_SECS=${SETTLE_SECS:-12}
SCENARIOS=${SCENARIOS:-pairs-max-qos0 pairs-max-qos1 latency-20k-qos0 latency-20k-qos1}
SHOAL=target/release/shoal
LT=target/release/shoal-loadtest
[ -x "$SHOAL" ] && [ -x "$LT" ] || { echo "build first: cargo build --release -p shoal-broker -p shoal-loadtest" >&2; exit 1; }
RESULTS="$(dirname "$OUT")/cluster-results"
mkdir -p "$RESULTS"

. benches/cluster_lib.sh

scenario_args() {
    case $1 in
        pairs-max-qos0) echo "pairs -c 50 -q 0 -s 64 -r max -d $DURATION" ;;
        pairs-max-qos1) echo "pairs -c 50 -q 1 -s 64 -r max --inflight 64 -d $DURATION" ;;
        latency-20k-qos0) echo "pairs -c 20 -q 0 -s 64 -r 1000 -d $DURATION" ;;
        latency-20k-qos1) echo "pairs -c 20 -q 1 -s 64 -r 1000 -d $DURATION" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

BROKERS=(mosquitto shoal cluster-same cluster-cross)
# SKIP_RUNS=1: only the idle measurement and the report (from the results already there).
[ -n "${SKIP_RUNS:-}${SKIP_SCENARIOS:-}" ] && SCENARIOS_RUN="" || SCENARIOS_RUN=$SCENARIOS
run_scenarios $SCENARIOS_RUN

# Connects and route writes.
if [ -z "${SKIP_RUNS:-}" ]; then
    for broker in shoal cluster; do
        if [ "$broker" = shoal ]; then
            start_single shoal
            targets=(-b "mqtt://127.0.0.1:${PORTS[0]}")
            routes_at=${PORTS[0]}
        else
            start_cluster 3
            sleep "$SETTLE_SECS"
            targets=(-b "mqtt://127.0.0.1:${PORTS[0]}" --more-brokers "mqtt://127.0.0.1:${PORTS[1]}" --more-brokers "mqtt://127.0.0.1:${PORTS[2]}")
            routes_at=${PORTS[1]}
        fi
        echo "== connects and route writes on $broker" >&2
        "$LT" conn -c "$CONNECTS" --ramp 20000 -d 3s "${targets[@]}" --no-broker-version \
            --progress off --label "connects/$broker" --json "$RESULTS/connects-$broker.json" >&2 || true
        python3 benches/route_writes.py "127.0.0.1:$routes_at" "$broker" --latency 500 --churn 20 500 \
            >"$RESULTS/routes-$broker.json" || true
        stop_all
    done
fi

# Idle: a 3-node cluster with no client, CPU and RSS per node over IDLE_SECS.
start_cluster 3
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=(); for pid in "${PIDS[@]}"; do before+=("$(ticks "$pid")"); done
sleep "$IDLE_SECS"
IDLE_LINES=()
hz=$(getconf CLK_TCK)
for i in "${!PIDS[@]}"; do
    pid=${PIDS[$i]}
    used=$(( $(ticks "$pid") - ${before[$i]} ))
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    IDLE_LINES+=("| node $((i + 1)) | $(python3 -c "print(f'{$used / $hz / $IDLE_SECS * 100:.1f}')") % | $(python3 -c "print(f'{$rss / 1024:.1f}')") MiB |")
done
stop_all

python3 - "$RESULTS" "$OUT" "$SCENARIOS" "$IDLE_SECS" "${IDLE_LINES[@]}" <<'PY'
import json, os, platform, sys, datetime
results, out, scenarios, idle_secs, idle = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4], sys.argv[5:]
brokers = ["mosquitto", "shoal", "cluster-same", "cluster-cross"]

def load(s, b):
    p = os.path.join(results, f"{s}-{b}.json")
    return json.load(open(p)) if os.path.exists(p) else None

def fig(r):
    if r is None:
        return None
    return {
        "rate": r["total"]["received_per_s"],
        "p99": r["total"]["latency"]["p99_us"],
        "cpu": (r.get("broker_usage") or {}).get("cpu_us_per_msg"),
        "lost": r["total"]["lost"],
    }

cpu = platform.machine()
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
lines = [
    f"Generated by `benches/cluster.sh` on {datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), "
    f"Linux {platform.release()}, one run per cell; every broker process on this one machine.",
    "",
    "| scenario | broker | msgs/s received | p99 | broker CPU µs/msg (all nodes) | lost | msgs/s vs shoal alone | CPU/msg vs shoal alone | msgs/s per CPU-s vs shoal alone | CPU/msg vs Mosquitto |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for s in scenarios:
    mosq, alone = fig(load(s, "mosquitto")), fig(load(s, "shoal"))
    for b in brokers:
        f = fig(load(s, b))
        if f is None:
            lines.append(f"| {s} | {b} | no result | | | | | | | |")
            continue
        def ratio(a, base, inv=False):
            if not a or not base:
                return "–"
            return f"{(base / a if inv else a / base):.2f}"
        cpu_text = "–" if f["cpu"] is None else "%.2f" % f["cpu"]
        lines.append(
            f"| {s} | {b} | {f['rate']:,.0f} | {f['p99'] / 1000:.2f} ms | "
            f"{cpu_text} | {f['lost']} | "
            f"{ratio(f['rate'], alone and alone['rate'])} | {ratio(f['cpu'], alone and alone['cpu'])} | "
            f"{ratio(f['cpu'], alone and alone['cpu'], inv=True)} | {ratio(f['cpu'], mosq and mosq['cpu'])} |")
def load_any(name):
    p = os.path.join(results, name)
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None

lines += ["", "Connects (each a client id claim: a Raft write in the cluster) and new filters (route writes), shoal alone against the 3-node cluster:", "",
          "| broker | connects/s | connect p99 | SUBACK of a new filter p50 / p99 | new filters/s (churn) |",
          "| --- | ---: | ---: | ---: | ---: |"]
for b in ["shoal", "cluster"]:
    c, r = load_any(f"connects-{b}.json"), load_any(f"routes-{b}.json")
    conn = f"{c['connections']['rate_per_s']:,.0f}" if c else "–"
    conn_p99 = f"{c['connections']['latency']['p99_us'] / 1000:.1f} ms" if c else "–"
    lat = f"{r['latency']['p50_ms']:.2f} / {r['latency']['p99_ms']:.2f} ms" if r and "latency" in r else "–"
    churn = f"{r['churn']['per_s']:,}" if r and "churn" in r else "–"
    lines.append(f"| {'shoal alone' if b == 'shoal' else '3-node cluster'} | {conn} | {conn_p99} | {lat} | {churn} |")
lines += ["", f"Idle 3-node cluster, no clients, {idle_secs} s:", "", "| node | CPU | RSS |", "| --- | ---: | ---: |"] + idle
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
