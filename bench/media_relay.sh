#!/usr/bin/env bash
# Media relay load, hookflash against rtpengine (userspace, --table=-1), side by side in one run:
# N calls × 2 parties × 50 packets/s through each relay; CPU per relayed packet, loss, added
# one-way latency (p50/p99; `relay=none` is the generator alone, parties sending straight to each
# other: the latency a relay adds is its figure minus that one). `relay=bare` is the least a relay
# in user space can do (recv_from + send_to, nothing else): the kernel's share, the floor under
# both relays' CPU figures; `bare-connected` the same with connect(2)ed sockets, `bare-uring` the
# same on io_uring (submissions and completions of many packets per system call). The generator
# is examples/relay_load.rs, the same for all.
#
#   bench/media_relay.sh [SECONDS] [CALLS...]      e.g. bench/media_relay.sh 10 100 500 1000 2000
#
# Needs rtpengine (Debian rtpengine-daemon) for the comparison; without it only hookflash runs.
# Everything stays on 127.0.0.1. Results go to stdout; docs/BENCHMARKS.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; shift || true
if [ $# -gt 0 ]; then counts=("$@"); else counts=(100 500 1000 2000); fi
cargo build --release --quiet --example relay_load
gen=target/release/examples/relay_load
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rtpengine_pid=""
stop_rtpengine() { [ -n "$rtpengine_pid" ] && kill "$rtpengine_pid" 2>/dev/null && wait "$rtpengine_pid" 2>/dev/null || true; rtpengine_pid=""; }
trap stop_rtpengine EXIT
start_rtpengine() {
  # A fresh daemon per run so every run starts with a full port range.
  rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:22230 \
    --port-min=30000 --port-max=39999 --delete-delay=0 --foreground --log-level=3 \
    > /tmp/hookflash-bench-rtpengine.log 2>&1 &
  rtpengine_pid=$!
  for _ in $(seq 100); do
    ss -lnu | grep -q 127.0.0.1:22230 && return 0
    sleep 0.1
  done
  echo "rtpengine did not start; see /tmp/hookflash-bench-rtpengine.log" >&2; return 1
}

for n in "${counts[@]}"; do
  $gen --relay none --calls "$n" --seconds "$secs"
  $gen --relay bare --calls "$n" --seconds "$secs"
  $gen --relay bare-connected --calls "$n" --seconds "$secs"
  $gen --relay bare-uring --calls "$n" --seconds "$secs"
  $gen --relay hookflash --calls "$n" --seconds "$secs"
  if command -v rtpengine >/dev/null; then
    start_rtpengine
    $gen --relay rtpengine --calls "$n" --seconds "$secs" --ng 127.0.0.1:22230 --pid "$rtpengine_pid"
    stop_rtpengine
  fi
done
