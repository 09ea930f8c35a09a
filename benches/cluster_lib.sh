# Shared by benches/cluster.sh and benches/sessions.sh (sourced after benches/lib.sh, with
# SHOAL set): brokers started by PID on free loopback ports, a 3-node cluster, and
# stopping them all.

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

# wait_spread ADMIN: waits (30 s at most) until the groups' leaders, session shards
# included, are spread over the nodes: each node leads one at least.
wait_spread() {
    for _ in $(seq 1 150); do
        if curl -sf "http://127.0.0.1:$1/api/v1/cluster" | python3 -c '
import json, sys
status = json.load(sys.stdin)
leaders = {g["leader"] for g in status["groups"] if g["group"] != "meta"}
nodes = {n["id"] for n in status["nodes"]}
sys.exit(0 if nodes <= leaders else 1)' 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "the leaderships did not spread" >&2
}

# start_cluster N [FLAG...]: starts N nodes, each with the FLAGs; sets PORTS (MQTT) and
# PIDS.
start_cluster() {
    local n=$1 seed="" i
    shift
    PORTS=()
    for i in $(seq 1 "$n"); do
        local mqtt admin cport dir
        mqtt=$(free_port); admin=$(free_port); cport=$(free_port); dir=$(mktemp -d -p "$WORK")
        local args=(--listen "127.0.0.1:$mqtt" --admin-listen "127.0.0.1:$admin"
            --cluster-listen "127.0.0.1:$cport" --node-id "$i" --data-dir "$dir"
            --sys-interval 0 --log warn "$@")
        if [ -n "$seed" ]; then args+=(--seeds "$seed"); else args+=(--bootstrap true); fi
        "$SHOAL" "${args[@]}" >"$WORK/node$i.log" 2>&1 &
        PIDS+=($!)
        PORTS+=("$mqtt")
        if [ -z "$seed" ]; then seed="127.0.0.1:$cport"; wait_ready "$admin"; fi
        ADMINS[$i]=$admin
    done
    for i in $(seq 2 "$n"); do wait_ready "${ADMINS[$i]}"; done
    wait_spread "${ADMINS[1]}"
}

start_single() { # shoal|shoal-before|mosquitto
    local port binary=$SHOAL
    port=$(free_port)
    if [ "$1" = shoal-before ]; then
        binary=${SHOAL_BEFORE:?SHOAL_BEFORE: the older shoal binary to compare with}
    fi
    if [ "$1" = mosquitto ]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$port" >"$WORK/m.conf"
        "$MOSQUITTO" -c "$WORK/m.conf" >"$WORK/mosquitto.log" 2>&1 &
    else
        "$binary" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --data-dir "$(mktemp -d -p "$WORK")" \
            --sys-interval 0 --log warn >"$WORK/shoal.log" 2>&1 &
    fi
    PIDS+=($!)
    PORTS=("$port")
    wait_port "$port"
}

# run_scenarios SCENARIO...: each scenario on each broker of BROKERS (mosquitto, shoal,
# cluster-same: a 3-node cluster with every client on node 1, cluster-cross: publishers
# and subscribers on different nodes; -s3: with three session shards), shoal-loadtest's JSON in RESULTS; the caller's
# scenario_args SCENARIO gives the load generator's arguments.
run_scenarios() {
    local scenario broker pid targets placement pids
    for scenario in "$@"; do
        for broker in "${BROKERS[@]}"; do
            case $broker in
                mosquitto|shoal|shoal-before) start_single "$broker"; targets=(-b "mqtt://127.0.0.1:${PORTS[0]}"); placement=() ;;
                cluster-same) start_cluster 3; targets=(-b "mqtt://127.0.0.1:${PORTS[0]}"); placement=() ;;
                cluster-same-s3) start_cluster 3 --session-shards 3; targets=(-b "mqtt://127.0.0.1:${PORTS[0]}"); placement=() ;;
                cluster-cross|cluster-cross-s3)
                    if [ "$broker" = cluster-cross-s3 ]; then start_cluster 3 --session-shards 3; else start_cluster 3; fi
                    targets=(-b "mqtt://127.0.0.1:${PORTS[0]}" --more-brokers "mqtt://127.0.0.1:${PORTS[1]}" --more-brokers "mqtt://127.0.0.1:${PORTS[2]}")
                    placement=(--placement cross) ;;
            esac
            pids=()
            for pid in "${PIDS[@]}"; do pids+=(--broker-pid "$pid"); done
            echo "== $scenario on $broker" >&2
            # shellcheck disable=SC2046
            "$LT" $(scenario_args "$scenario") "${targets[@]}" "${placement[@]}" "${pids[@]}" \
                --no-broker-version --progress lines --label "$scenario/$broker" \
                --json "$RESULTS/$scenario-$broker.json" >&2 || true
            stop_all
        done
    done
}
