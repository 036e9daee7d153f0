#!/usr/bin/env bash
# Generated media load: N held calls, the a-leg hearing music on hold (media/moh.wav), the b-leg
# ringback, both looped — N × 100 generated packets/s; the relay's CPU per generated packet and
# the pacing jitter of each stream (p50/p99/max), next to `bare` (threads that only send the
# same packets: the kernel's floor). The generator is examples/generate_load.rs.
#
#   bench/media_generation.sh [SECONDS] [CALLS...]      e.g. bench/media_generation.sh 10 100 1000
#
# Everything stays on 127.0.0.1. Results go to stdout; docs/BENCHMARKS.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; shift || true
if [ $# -gt 0 ]; then counts=("$@"); else counts=(100 1000); fi
cargo build --release --quiet --example generate_load
gen=target/release/examples/generate_load
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for n in "${counts[@]}"; do
  $gen --calls "$n" --seconds "$secs" --bare
  $gen --calls "$n" --seconds "$secs"
done
