#!/usr/bin/env bash
# Transports compared with shoal-loadtest: TLS handshakes per second, resident memory per
# idle TLS connection, throughput over TCP, TLS, WebSocket, WSS and QUIC, and the fleet
# scenario over TLS, for shoal and
# Mosquitto (Debian package; it has no QUIC), alternating brokers so that the machine's
# drift hits both alike. Writes a markdown table (benches/transports.md).
#
#   benches/transports.sh
#
# Environment:
#   HANDSHAKES  connections opened as fast as possible in the handshake run (default 5000)
#   IDLE        idle TLS connections held in the memory run (default 10000)
#   DURATION    publishing time of the throughput runs (default 10s)
#   DOC         the document whose <!-- begin OUT --> ... <!-- end OUT --> block gets the
#               table (default BENCHMARKS.md)
#   OUT         markdown output (default benches/transports.md); JSON results go to
#               benches/transports-results/
# Every broker this script starts is stopped by its PID, also on error or Ctrl-C. All
# traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

HANDSHAKES=${HANDSHAKES:-5000}
IDLE=${IDLE:-10000}
DURATION=${DURATION:-10s}
OUT=${OUT:-benches/transports.md}
RESULTS="$(dirname "$OUT")/transports-results"
mkdir -p "$RESULTS"

cargo build --release -p shoal-broker -p shoal-loadtest >&2
LT=target/release/shoal-loadtest
SHOAL=target/release/shoal
# shellcheck source=benches/lib.sh
source benches/lib.sh

# One ECDSA P-256 CA and server certificate (localhost, 127.0.0.1) for both brokers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 7 -extfile "$WORK/san.ext" -out "$WORK/server.pem" 2>/dev/null
# Mosquitto started as root drops to its own user: let it read the files.
chmod 755 "$WORK" && chmod 644 "$WORK"/server.* "$WORK/ca.pem"

# start_broker BROKER TRANSPORT PORT: sets BROKER_PID and URL (what to load).
start_broker() {
    local broker=$1 transport=$2 port=$3 tls=""
    case $transport in
        tcp) URL="mqtt://127.0.0.1:$port" ;;
        tls) URL="mqtts://localhost:$port" ;;
        ws) URL="ws://127.0.0.1:$port/mqtt" ;;
        wss) URL="wss://localhost:$port/mqtt" ;;
        quic) URL="quic://localhost:$port" ;;
    esac
    case $broker in
        mosquitto)
            {
                # Mosquitto 2.0 starts no WebSocket listener unless it also has a plain one.
                case $transport in ws | wss)
                    printf 'listener %s 127.0.0.1\n' "$(free_port)" ;;
                esac
                printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port"
                case $transport in ws | wss) echo "protocol websockets" ;; esac
                case $transport in tls | wss)
                    printf 'certfile %s\nkeyfile %s\n' "$WORK/server.pem" "$WORK/server.key" ;;
                esac
            } >"$WORK/mosquitto.conf"
            "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
            ;;
        shoal)
            case $transport in tls | wss | quic)
                tls=$(printf 'cert = "%s"\nkey = "%s"\n' "$WORK/server.pem" "$WORK/server.key") ;;
            esac
            printf '[[listeners]]\nkind = "%s"\nbind = "127.0.0.1:%s"\n%s\n' \
                "$transport" "$port" "$tls" >"$WORK/shoal.toml"
            rm -rf "$WORK/data"
            "$SHOAL" --config "$WORK/shoal.toml" --data-dir "$WORK/data" \
                --admin-listen 127.0.0.1:0 >"$WORK/shoal.log" 2>&1 &
            ;;
    esac
    BROKER_PID=$!
    if [ "$transport" = quic ]; then sleep 0.5; else wait_port "$port"; fi
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

run() {
    local name=$1 broker=$2 transport=$3
    shift 3
    local port
    port=$(free_port)
    start_broker "$broker" "$transport" "$port"
    sleep 0.3
    rss_kib "$BROKER_PID" >"$RESULTS/$name-$broker-$transport.baseline"
    echo "== $name over $transport on $broker" >&2
    "$LT" "$@" -b "$URL" --ca "$WORK/ca.pem" --broker-pid "$BROKER_PID" --progress lines \
        --label "$name/$broker/$transport" --json "$RESULTS/$name-$broker-$transport.json" >&2 || true
    stop_broker
}

for transport in tcp tls; do
    for broker in mosquitto shoal; do
        run handshakes "$broker" "$transport" conn -c "$HANDSHAKES" --workers 2 -d 1s
    done
    for broker in shoal mosquitto; do
        run idle "$broker" "$transport" conn -c "$IDLE" --workers 2 --ramp 5000 -d 3s
    done
done
for transport in tcp tls ws wss quic; do
    order="mosquitto shoal"
    [ "$transport" = tls ] || [ "$transport" = wss ] && order="shoal mosquitto"
    [ "$transport" = quic ] && order="shoal"
    for broker in $order; do
        run pairs "$broker" "$transport" pairs -c 50 -q 0 -s 64 -r max --inflight 64 -d "$DURATION"
    done
done
# The industrial fleet over TLS: 10,000 devices at 1 msg/s, QoS 1, four shared-group
# backends, commands.
for broker in shoal mosquitto; do
    run fleet "$broker" tls fleet --devices 10000 --sites 100 --interval 1s -q 1 --backends 4 \
        --command-rate 100 --ramp 5000 --workers 2 -d "$DURATION"
done

python3 - "$RESULTS" "$OUT" "$HANDSHAKES" "$IDLE" <<'PY'
import json, os, platform, sys, datetime
results, out, handshakes, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def load(name, broker, transport):
    p = os.path.join(results, f"{name}-{broker}-{transport}.json")
    if not os.path.exists(p):
        return None, None
    base = open(p.replace(".json", ".baseline")).read().strip()
    return json.load(open(p)), int(base) * 1024 if base else None

cpu = platform.machine()
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
lines = [f"Generated by `benches/transports.sh` on {datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), "
         f"Linux {platform.release()}. ECDSA P-256 server certificate; MQTT 5 clients.", ""]

lines += ["| connections opened at once | broker | transport | established | handshakes/s | connect p99 | broker CPU ms per connection |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
for transport in ["tcp", "tls"]:
    for broker in ["mosquitto", "shoal"]:
        r, _ = load("handshakes", broker, transport)
        if not r:
            continue
        c = r["connections"]
        cpu_s = (r.get("broker_usage") or {}).get("cpu_seconds") or 0
        lines.append(f"| {handshakes} | {broker} | {transport} | {c['succeeded']} | {c['rate_per_s']:,.0f} | "
                     f"{c['latency']['p99_us'] / 1000:.1f} ms | {cpu_s * 1000 / max(c['succeeded'], 1):.3f} |")
lines += ["", "| idle connections | broker | transport | established | broker RSS | RSS per connection |",
          "| --- | --- | --- | ---: | ---: | ---: |"]
for transport in ["tcp", "tls"]:
    for broker in ["mosquitto", "shoal"]:
        r, base = load("idle", broker, transport)
        if not r:
            continue
        c = r["connections"]
        rss = (r.get("broker_usage") or {}).get("rss_peak_bytes") or 0
        per = (rss - (base or 0)) / max(c["peak_open"], 1)
        lines.append(f"| {idle} | {broker} | {transport} | {c['peak_open']} | {rss / 1048576:.1f} MiB | {per / 1024:.2f} KiB |")
lines += ["", "| pairs, 50 × QoS 0, 64 B, saturation | broker | transport | msgs/s received | p99 | broker CPU µs/msg | lost |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
for transport in ["tcp", "tls", "ws", "wss", "quic"]:
    for broker in ["mosquitto", "shoal"]:
        r, _ = load("pairs", broker, transport)
        if not r:
            continue
        t = r["total"]
        cpu_msg = (r.get("broker_usage") or {}).get("cpu_us_per_msg")
        lines.append(f"| | {broker} | {transport} | {t['received_per_s']:,.0f} | {t['latency']['p99_us'] / 1000:.2f} ms | "
                     f"{'–' if cpu_msg is None else f'{cpu_msg:.2f}'} | {t['lost']} |")
lines += ["", "| fleet over TLS: 10,000 devices, 1 msg/s, QoS 1 | broker | msgs/s received | p99 | broker CPU µs/msg | broker RSS | lost |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
for broker in ["mosquitto", "shoal"]:
    r, _ = load("fleet", broker, "tls")
    if not r:
        continue
    t = r["total"]
    u = r.get("broker_usage") or {}
    cpu_msg = u.get("cpu_us_per_msg")
    lines.append(f"| | {broker} | {t['received_per_s']:,.0f} | {t['latency']['p99_us'] / 1000:.2f} ms | "
                 f"{'–' if cpu_msg is None else f'{cpu_msg:.2f}'} | {(u.get('rss_peak_bytes') or 0) / 1048576:.1f} MiB | {t['lost']} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $OUT" >&2
# BENCHMARKS.md carries the table between markers named after OUT, when it has them.
python3 benches/splice.py "$OUT" "${DOC:-BENCHMARKS.md}" || echo "(not spliced into ${DOC:-BENCHMARKS.md})" >&2
