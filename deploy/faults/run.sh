#!/usr/bin/env bash
# The long fault series (deploy/faults/README.md): builds shoal and shoal-loadtest, then runs
# the ignored `long_series` test of crates/broker/tests/faults.rs with the FAULTS_* settings
# from the environment, printing every run's seed and a table of the results.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile_args=()
if [ "${FAULTS_RELEASE:-0}" = 1 ]; then
    profile_args=(--release)
fi
jobs=(-j "${FAULTS_JOBS:-1}")

cargo build "${jobs[@]}" "${profile_args[@]}" -p shoal-loadtest --bin shoal-loadtest
exec cargo test "${jobs[@]}" "${profile_args[@]}" -p shoal-broker --test faults -- \
    --ignored --exact long_series --nocapture
