# Shared by benches/compare.sh and benches/transports.sh (sourced, not run): Mosquitto's
# path, a work folder, and starting and stopping brokers by PID on free loopback ports.

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1; }

WORK=$(mktemp -d)
BROKER_PID=""
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
trap 'stop_broker; rm -rf "$WORK"' EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something accepts TCP connections there (10 s at most); on failure
# shows the tail of the brokers' logs.
wait_port() {
    for _ in $(seq 1 100); do
        if (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "broker did not listen on port $1" >&2
    for f in "$WORK"/*.log; do echo "$f:"; tail -n 5 "$f"; done >&2
    return 1
}
