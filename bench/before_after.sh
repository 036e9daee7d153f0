#!/usr/bin/env bash
# Two builds of hookflash side by side in one run, interleaved so that whatever else the machine
# does falls on both: call rate (bench/call_rate.sh, kamailio skipped), relay CPU per packet and
# key to action (examples/relay_load.rs), memory per call (bench/call_memory.sh). Every run's
# raw output is kept in OUT.
#
#   bench/before_after.sh BEFORE_CHECKOUT OUT [REPEATS]
#
# BEFORE_CHECKOUT is another checkout of hookflash with its release build done
# (`cargo build --release --all-targets` there); this checkout is built here. REPEATS (default
# 3) runs of each relay and call-rate measurement per build, alternating builds. Settings that
# matter are those of the scripts it runs: call rate 20 s per rate at 2,000, 3,000 and 3,500 calls/s,
# hold 500 ms, 4 MiB socket buffers, RTP ports 30000-59999; relay 10 s at 500 and 1,000 calls,
# two parties per call each sending 172-byte PCMU packets every 20 ms, RTP ports 40000-59999,
# one worker thread per core; memory 2,000 calls held 120 s, 200 new calls/s.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(cd "$1" && pwd); out=$2; repeats=${3:-3}
mkdir -p "$out"
cargo build --release --quiet --all-targets
after=$(pwd)
for b in "$before" "$after"; do
  [ -x "$b/target/release/hookflash" ] && [ -x "$b/target/release/examples/relay_load" ] \
    || { echo "no release build in $b" >&2; exit 1; }
done
label() { [ "$1" = "$before" ] && echo before || echo after; }
{
  echo "machine: $(nproc) CPUs, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo)"
  echo "kernel: $(uname -r); date: $(date -u +%FT%TZ)"
  echo "before: $(git -C "$before" log --oneline -1)"
  echo "after:  $(git -C "$after" log --oneline -1)$(git -C "$after" diff --quiet || echo ' (with uncommitted changes)')"
} | tee "$out/setup.txt"

for n in $(seq "$repeats"); do
  for b in "$before" "$after"; do
    for calls in 500 1000; do
      "$b/target/release/examples/relay_load" --relay hookflash --calls "$calls" --seconds 10 \
        | sed "s/^/$(label "$b") run=$n /" | tee -a "$out/relay.txt"
    done
  done
done

for n in $(seq "$repeats"); do
  for b in "$before" "$after"; do
    HOOKFLASH="$b/target/release/hookflash" KAMAILIO=0 bench/call_rate.sh 20 2000 3000 3500 2>&1 \
      | grep -v "^CSV files" | sed "s/^/$(label "$b") run=$n /" | tee -a "$out/call_rate.txt"
  done
done

for b in "$before" "$after"; do
  HOOKFLASH="$b/target/release/hookflash" bench/call_memory.sh 2000 2>&1 \
    | sed "s/^/$(label "$b") /" | tee -a "$out/call_memory.txt"
done
echo "raw output in $out"
