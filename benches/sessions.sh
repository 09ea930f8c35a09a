#!/usr/bin/env bash
# Persistent QoS 1: subscribers with persistent sessions (clean start 0, session expiry
# 1 h), so every message is written for its subscriber before PUBACK. Measured in one
# session against Mosquitto (its default: persistence in memory only, nothing is written
# before PUBACK) and shoal alone (the session group with one voter: each write is on the
# node's disk before PUBACK), then a 3-node cluster where every write is committed on two
# of the three nodes' disks before PUBACK, with the clients on node 1 (same) and with
# publishers and subscribers on different nodes (cross).
#
#     cargo build --release -p shoal-broker -p shoal-loadtest
#     DURATION=10s OUT=benches/sessions.md benches/sessions.sh
#
# Scenarios: persistent-max (50 pairs, QoS 1, as fast as PUBACKs come back, 64 in flight
# each), persistent-15k (15 pairs at 1,000 msgs/s each: 15,000 msgs/s offered).
# Environment: DURATION (10s), SCENARIOS, BROKERS, OUT (benches/sessions.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
OUT=${OUT:-benches/sessions.md}
SCENARIOS=${SCENARIOS:-persistent-max persistent-15k}
BROKERS=(${BROKERS:-mosquitto shoal cluster-same cluster-cross})
SHOAL=target/release/shoal
LT=target/release/shoal-loadtest
[ -x "$SHOAL" ] && [ -x "$LT" ] || { echo "build first: cargo build --release -p shoal-broker -p shoal-loadtest" >&2; exit 1; }
RESULTS="$(dirname "$OUT")/sessions-results"
mkdir -p "$RESULTS"

PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT INT TERM

wait_ready() { # admin port
    for _ in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "node with admin port $1 not ready" >&2
    return 1
}

# start_cluster N: starts N nodes; sets PORTS (MQTT) and PIDS.
start_cluster() {
    local n=$1 seed="" i
    PORTS=()
    for i in $(seq 1 "$n"); do
        local mqtt admin cport dir
        mqtt=$(free_port); admin=$(free_port); cport=$(free_port); dir=$(mktemp -d -p "$WORK")
        local args=(--listen "127.0.0.1:$mqtt" --admin-listen "127.0.0.1:$admin"
            --cluster-listen "127.0.0.1:$cport" --node-id "$i" --data-dir "$dir"
            --sys-interval 0 --log warn)
        if [ -n "$seed" ]; then args+=(--seeds "$seed"); else args+=(--bootstrap true); fi
        "$SHOAL" "${args[@]}" >"$WORK/node$i.log" 2>&1 &
        PIDS+=($!)
        PORTS+=("$mqtt")
        if [ -z "$seed" ]; then seed="127.0.0.1:$cport"; wait_ready "$admin"; fi
        ADMINS[$i]=$admin
    done
    for i in $(seq 2 "$n"); do wait_ready "${ADMINS[$i]}"; done
}

start_single() { # shoal|mosquitto
    local port
    port=$(free_port)
    if [ "$1" = mosquitto ]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$port" >"$WORK/m.conf"
        "$MOSQUITTO" -c "$WORK/m.conf" >"$WORK/mosquitto.log" 2>&1 &
    else
        "$SHOAL" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --data-dir "$(mktemp -d -p "$WORK")" \
            --sys-interval 0 --log warn >"$WORK/shoal.log" 2>&1 &
    fi
    PIDS+=($!)
    PORTS=("$port")
    wait_port "$port"
}

scenario_args() {
    case $1 in
        persistent-max) echo "pairs -c 50 -q 1 -s 64 -r max --inflight 64 --persistent --session-expiry 3600 -d $DURATION" ;;
        persistent-15k) echo "pairs -c 15 -q 1 -s 64 -r 1000 --persistent --session-expiry 3600 -d $DURATION" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

for scenario in $SCENARIOS; do
    for broker in "${BROKERS[@]}"; do
        case $broker in
            mosquitto|shoal) start_single "$broker"; targets=(-b "mqtt://127.0.0.1:${PORTS[0]}"); placement=() ;;
            cluster-same) start_cluster 3; targets=(-b "mqtt://127.0.0.1:${PORTS[0]}"); placement=() ;;
            cluster-cross) start_cluster 3
                targets=(-b "mqtt://127.0.0.1:${PORTS[0]}" --more-brokers "mqtt://127.0.0.1:${PORTS[1]}" --more-brokers "mqtt://127.0.0.1:${PORTS[2]}")
                placement=(--placement cross) ;;
        esac
        pids=()
        for pid in "${PIDS[@]}"; do pids+=(--broker-pid "$pid"); done
        echo "== $scenario on $broker" >&2
        "$LT" $(scenario_args "$scenario") "${targets[@]}" "${placement[@]}" "${pids[@]}" \
            --no-broker-version --progress lines --label "$scenario/$broker" \
            --json "$RESULTS/$scenario-$broker.json" >&2 || true
        stop_all
    done
done

python3 - "$RESULTS" "$OUT" "$SCENARIOS" "${BROKERS[*]}" <<'PY'
import datetime, json, os, platform, sys
results, out, scenarios, brokers = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
def load(s, b):
    p = os.path.join(results, f"{s}-{b}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def fig(r):
    if r is None:
        return None
    return {"rate": r["total"]["received_per_s"], "p50": r["total"]["latency"]["p50_us"],
            "p99": r["total"]["latency"]["p99_us"],
            "cpu": (r.get("broker_usage") or {}).get("cpu_us_per_msg"), "lost": r["total"]["lost"]}
cpu = platform.machine()
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
lines = [f"Generated by `benches/sessions.sh` on {datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), "
         f"Linux {platform.release()}, one run per cell; every broker process on this one machine.", "",
         "| scenario | broker | msgs/s received | p50 | p99 | broker CPU µs/msg (all nodes) | lost | msgs/s vs Mosquitto | msgs/s vs shoal alone |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for s in scenarios:
    mosq, alone = fig(load(s, "mosquitto")), fig(load(s, "shoal"))
    for b in brokers:
        f = fig(load(s, b))
        if f is None:
            lines.append(f"| {s} | {b} | no result | | | | | | |")
            continue
        r = lambda base: f"{f['rate'] / base['rate']:.2f}" if base and base["rate"] else "–"
        cpu_text = "–" if f["cpu"] is None else "%.1f" % f["cpu"]
        lines.append(f"| {s} | {b} | {f['rate']:,.0f} | {f['p50'] / 1000:.2f} ms | {f['p99'] / 1000:.2f} ms | {cpu_text} | {f['lost']} | {r(mosq)} | {r(alone)} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
