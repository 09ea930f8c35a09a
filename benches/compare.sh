#!/usr/bin/env bash
# Broker comparison with shoal-loadtest: the same scenarios against Mosquitto and against a
# second broker (shoal), alternating between them so that the machine's drift hits both
# alike. Writes a markdown table: scenario × broker → msgs/s, p99, broker CPU µs per
# delivered message, resident memory, and the ratio other/Mosquitto.
#
#   benches/compare.sh                                  # Mosquitto alone
#   SHOAL_CMD='target/release/shoal --listen 127.0.0.1:{port}' benches/compare.sh
#
# Environment:
#   SHOAL_CMD   command starting the second broker; {port} is replaced by its port
#   SHOAL_NAME  its name in the table (default: shoal)
#   RUMQTTD     path to a rumqttd binary (`cargo install rumqttd`): adds it as a third
#               broker, MQTT 3.1.1 listener only
#   MQTT_VERSION  protocol of every client (3.1.1 or 5; default 5; use 3.1.1 with RUMQTTD)
#   SCENARIOS   space-separated subset of: pairs-qos0 pairs-qos1 fanin-qos0 fanin-qos1
#               fanout-qos0 fanout-qos1 pairs-max-qos0 pairs-max-qos1 fanin-max-qos0
#               fanout-max-qos0 latency-20k-qos0 latency-20k-qos1 pairs-16k idle fleet
#               (default: all)
#   DURATION    publishing time per run (default 10s)
#   ROUNDS      rounds of every scenario on every broker (default 1)
#   IDLE        idle connections (default 19000: about what one broker process may hold here)
#   DOC         the document whose <!-- begin OUT --> ... <!-- end OUT --> block gets the
#               table (default BENCHMARKS.md)
#   OUT         markdown output (default benches/compare.md); JSON results go to OUT's
#               directory, under compare-results/
# Every broker this script starts is stopped by its PID, also on error or Ctrl-C. All
# traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-19000}
OUT=${OUT:-benches/compare.md}
SHOAL_NAME=${SHOAL_NAME:-shoal}
RUMQTTD=${RUMQTTD:-}
MQTT_VERSION=${MQTT_VERSION:-5}
SCENARIOS=${SCENARIOS:-pairs-max-qos0 pairs-max-qos1 fanin-max-qos0 fanout-max-qos0 latency-20k-qos0 latency-20k-qos1 pairs-qos0 pairs-qos1 fanin-qos0 fanin-qos1 fanout-qos0 fanout-qos1 pairs-16k idle fleet}
RESULTS="$(dirname "$OUT")/compare-results"
mkdir -p "$RESULTS"

LT=target/release/shoal-loadtest
cargo build --release -p shoal-loadtest >&2

# shellcheck source=benches/lib.sh
source benches/lib.sh


# start_broker NAME PORT: starts the broker in the background and sets BROKER_PID.
start_broker() {
    local name=$1 port=$2
    case $name in
        mosquitto)
            # Equivalent settings: anonymous, no persistence, default queue limits.
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$WORK/mosquitto.conf"
            "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
            ;;
        rumqttd)
            # rumqttd's own demo shape: one MQTT 3.1.1 listener, generous limits.
            cat >"$WORK/rumqttd.toml" <<CONF
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 100
dynamic_filters = true
CONF
            "$RUMQTTD" -c "$WORK/rumqttd.toml" >"$WORK/rumqttd.log" 2>&1 &
            ;;
        *)
            bash -c "${SHOAL_CMD//\{port\}/$port}" >"$WORK/$name.log" 2>&1 &
            ;;
    esac
    BROKER_PID=$!
    wait_port "$port"
}

# The load-test arguments of each scenario.
scenario_args() {
    case $1 in
        pairs-qos0) echo "pairs -c 100 -q 0 -s 64 -r 1000 -d $DURATION" ;;
        # Saturation: every publisher as fast as its window allows; msgs/s is what arrives.
        pairs-max-qos0) echo "pairs -c 50 -q 0 -s 64 -r max --inflight 64 -d $DURATION" ;;
        pairs-max-qos1) echo "pairs -c 50 -q 1 -s 64 -r max --inflight 64 -d $DURATION" ;;
        fanin-max-qos0) echo "fanin -c 50 -q 0 -s 64 -r max -d $DURATION" ;;
        fanout-max-qos0) echo "fanout -c 50 -q 0 -s 64 -r max -d $DURATION" ;;
        # Latency at a fixed, moderate load: 20,000 msgs/s over 20 pairs.
        latency-20k-qos0) echo "pairs -c 20 -q 0 -s 64 -r 1000 -d $DURATION" ;;
        latency-20k-qos1) echo "pairs -c 20 -q 1 -s 64 -r 1000 -d $DURATION" ;;
        pairs-qos1) echo "pairs -c 100 -q 1 -s 64 -r 500 -d $DURATION" ;;
        fanin-qos0) echo "fanin -c 100 -q 0 -s 64 -r 1000 -d $DURATION" ;;
        fanin-qos1) echo "fanin -c 100 -q 1 -s 64 -r 500 -d $DURATION" ;;
        fanout-qos0) echo "fanout -c 100 -q 0 -s 64 -r 1000 -d $DURATION" ;;
        fanout-qos1) echo "fanout -c 100 -q 1 -s 64 -r 500 -d $DURATION" ;;
        pairs-16k) echo "pairs -c 20 -q 0 -s 16KiB -r 500 -d $DURATION" ;;
        idle) echo "conn -c $IDLE --ramp 5000 --workers 2 -d $DURATION" ;;
        fleet) echo "fleet --devices 10000 --sites 100 --interval 1s -q 1 --backends 4 --command-rate 100 --ramp 5000 --workers 2 -d $DURATION" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

BROKERS=(mosquitto)
[ -n "${SHOAL_CMD:-}" ] && BROKERS+=("$SHOAL_NAME")
[ -n "$RUMQTTD" ] && BROKERS+=(rumqttd)

for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        # Alternate which broker goes first, round by round and scenario by scenario.
        order=("${BROKERS[@]}")
        if (( (round + ${#scenario}) % 2 == 0 )) && (( ${#BROKERS[@]} > 1 )); then
            order=("${BROKERS[@]:1}" "${BROKERS[0]}")
        fi
        for broker in "${order[@]}"; do
            port=$(free_port)
            start_broker "$broker" "$port"
            echo "== $scenario on $broker (round $round)" >&2
            # shellcheck disable=SC2046
            "$LT" $(scenario_args "$scenario") -V "$MQTT_VERSION" -b "mqtt://127.0.0.1:$port" \
                --broker-pid "$BROKER_PID" --progress lines --label "$scenario/$broker" \
                --json "$RESULTS/$scenario-$broker-$round.json" >&2 || true
            stop_broker
        done
    done
done

python3 - "$RESULTS" "$OUT" "$ROUNDS" "$SCENARIOS" "${BROKERS[@]}" <<'PY'
import json, os, platform, statistics, subprocess, sys, datetime
results, out, rounds, scenarios, brokers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]

def load(s, b):
    runs = []
    for r in range(1, rounds + 1):
        p = os.path.join(results, f"{s}-{b}-{r}.json")
        if os.path.exists(p):
            runs.append(json.load(open(p)))
    return runs

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def figures(runs):
    if not runs:
        return None
    idle = runs[0]["scenario"] == "conn"
    return {
        "rate": med([r["connections"]["peak_open"] if idle else r["total"]["received_per_s"] for r in runs]),
        "p99": med([r["total"]["latency"]["p99_us"] for r in runs]) if not idle else None,
        "cpu": med([(r.get("broker_usage") or {}).get("cpu_us_per_msg") for r in runs]),
        "rss": med([(r.get("broker_usage") or {}).get("rss_peak_bytes") for r in runs]),
        "lost": sum(r["total"]["lost"] for r in runs),
        "idle": idle,
    }

def fmt(v, f):
    return "–" if v is None else f(v)

cpu = platform.processor() or platform.machine()
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
lines = [
    f"Generated by `benches/compare.sh` on {datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), "
    f"Linux {platform.release()}, {rounds} round(s), median per cell.",
    "",
    "| scenario | broker | msgs/s received (idle: connections) | p99 | broker CPU µs/msg | broker RSS | lost | msgs/s vs Mosquitto | CPU/msg vs Mosquitto |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for s in scenarios:
    base = figures(load(s, "mosquitto"))
    for b in brokers:
        f = figures(load(s, b))
        if f is None:
            lines.append(f"| {s} | {b} | no result | | | | | | |")
            continue
        ratio = "1.00" if b == "mosquitto" else (
            f"{f['rate'] / base['rate']:.2f}" if base and base["rate"] else "–")
        cpu_ratio = "1.00" if b == "mosquitto" and f["cpu"] else (
            f"{f['cpu'] / base['cpu']:.2f}" if base and base["cpu"] and f["cpu"] else "–")
        lines.append(
            f"| {s} | {b} | {fmt(f['rate'], lambda v: f'{v:,.0f}')} | "
            f"{fmt(f['p99'], lambda v: f'{v / 1000:.2f} ms')} | {fmt(f['cpu'], lambda v: f'{v:.2f}')} | "
            f"{fmt(f['rss'], lambda v: f'{v / 1048576:.1f} MiB')} | {f['lost']} | {ratio} | {cpu_ratio} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $OUT" >&2
# BENCHMARKS.md carries the table between markers named after OUT, when it has them.
python3 benches/splice.py "$OUT" "${DOC:-BENCHMARKS.md}" || echo "(not spliced into ${DOC:-BENCHMARKS.md})" >&2
