#!/usr/bin/env bash
# The QoS 2 kill -9 scenario, many times: 2 persistent publishers and 2 persistent
# subscribers (MQTT 5, session expiry 1 h, clean start 0 on reconnect) exchange QoS 2
# messages on chk/#; the real shoal binary is killed with SIGKILL at a different point of
# each run, restarted on the same data folder, and the clients reconnect and complete their
# flows. The checker (crates/broker/tests/crash.rs) fails on any acknowledged message lost,
# any QoS 2 duplicate, or a per-publisher order violation.
#
#   RUNS=20 benches/crash_qos2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-20}
SHOAL_CRASH_RUNS=$runs cargo nextest run -p shoal-broker --test crash --no-capture
echo "crash_qos2: $runs kill -9 runs passed ($(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'))"
