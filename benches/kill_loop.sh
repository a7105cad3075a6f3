#!/usr/bin/env bash
# The kill tests at full length (BENCHMARKS.md, "Persistence"): `sparsebuf serve URL --cache-dir`
# killed with SIGKILL 100 times under 4 curl clients, then the library's own kill test 100 times.
# CI runs 20 trials of each. Needs curl. Bounded: each trial lasts at most 0.5 s of reading.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-100}"
SPARSEBUF_KILL_TRIALS="$trials" cargo test --release -p sparsebuf-cli --test persist_kill -- --nocapture
SPARSEBUF_KILL_FULL_READS=0 SPARSEBUF_KILL_TRIALS="$trials" \
    cargo test --release -p sparsebuf-cli --test persist_kill -- --nocapture
SPARSEBUF_KILL_TRIALS="$trials" cargo test --release --features client --test persist \
    kills_ -- --nocapture
