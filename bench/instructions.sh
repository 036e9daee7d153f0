#!/usr/bin/env bash
# Instructions, not seconds: what two builds of hookflash execute per call and per relayed
# packet, counted by valgrind's callgrind (user-space instructions: the kernel's share of each
# system call is the same for both and not counted). Repeatable whatever else the machine does,
# where CPU seconds on a shared 2-core machine spread by ±20 % between runs of one build.
#
#   bench/instructions.sh BEFORE_CHECKOUT OUT
#
# Per call: the daemon (release build, the example config, RUST_LOG=warn) under callgrind; its
# counters are zeroed once it is up, then sipp places CALLS calls (default 400) at 20 calls/s,
# each held 500 ms (sipp uac → hookflash → bench/sipp/uas_200.xml), and the counters are dumped:
# instructions / calls. Per packet: examples/relay_load (20 calls, 10 s, both parties sending
# 172-byte PCMU every 20 ms) with collection only inside the relay's worker threads
# (`Worker::run` and what it calls): instructions / relayed packets.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(cd "$1" && pwd); out=$2; calls=${CALLS:-400}
mkdir -p "$out"
cargo build --release --quiet --all-targets
after=$(pwd)
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
label() { [ "$1" = "$before" ] && echo before || echo after; }
uac_port=25470; uas_port=25480; hf_port=26460
wait_udp() { for _ in $(seq 600); do ss -lnu | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }
total_ir() { # the summed instruction counts of a callgrind output file
  awk '/^summary:|^totals:/ {print $2; exit}' "$1"
}

for b in "$before" "$after"; do
  name=$(label "$b")
  work=$(mktemp -d /tmp/hookflash-ir-XXXX)
  sed -e "s/127.0.0.1:5060/127.0.0.1:$hf_port/" -e "s/127.0.0.1:8080/127.0.0.1:28480/" \
      -e "s/ports: 20000-29999/ports: 30000-59999/" \
      -e "s/password: pass1002/password: pass1002\n        contact: \"sip:1002@127.0.0.1:$uas_port\"/" \
      config.example.yaml > "$work/config.yaml"
  sed -i "s/^  tcp: 127.0.0.1:$hf_port.*/  tcp: null/" "$work/config.yaml"
  # The load comes from one address (sipp on loopback): no per-source limits.
  sed -i "s/^  challenge_invites: .*/&\n  max_source_rate: null\n  max_source_unanswered: null/" "$work/config.yaml"
  cp -r metaflows media "$work/"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/calls-$name.%p.out" \
    "$b/target/release/hookflash" run --config "$work/config.yaml" > "$work/hookflash.log" 2>&1 &
  hpid=$!
  wait_udp $hf_port
  sipp -sf bench/sipp/uas_200.xml -i 127.0.0.1 -mi 127.0.0.1 -p $uas_port -mp 27500 -nostdin \
    > "$work/uas.log" 2>&1 &
  uas=$!
  wait_udp $uas_port
  sleep 2
  callgrind_control --zero "$hpid" > /dev/null
  (cd "$work" && sipp -sn uac 127.0.0.1:$hf_port -s 1002 -i 127.0.0.1 -mi 127.0.0.1 -p $uac_port \
     -mp 27400 -r 20 -m "$calls" -d 500 -timeout 120s -nostdin -trace_stat -stf "$work/uac.csv" \
     > "$work/uac.log" 2>&1) || true
  sleep 3   # the last BYEs answered
  callgrind_control --dump "$hpid" > /dev/null
  kill $uas $hpid; wait $uas $hpid 2>/dev/null || true
  dump=$(ls -t "$out"/calls-$name.*.out.* 2>/dev/null | head -1)
  ok=$(python3 -c "import csv;r=list(csv.DictReader(open('$work/uac.csv'),delimiter=';'))[-1];print(r['SuccessfulCall(C)'].strip())")
  ir=$(total_ir "$dump")
  echo "$name calls_ok=$ok instructions=$ir per_call=$((ir / (ok > 0 ? ok : 1)))" | tee -a "$out/instructions.txt"

  valgrind --tool=callgrind --callgrind-out-file="$out/relay-$name.out" \
    --toggle-collect='hookflash::media::relay::Worker::run' \
    "$b/target/release/examples/relay_load" --relay hookflash --calls 20 --seconds 10 \
    > "$out/relay-$name.txt" 2> "$out/relay-$name.valgrind.txt"
  relayed=$(grep -o 'received=[0-9]*' "$out/relay-$name.txt" | cut -d= -f2)
  ir=$(total_ir "$out/relay-$name.out")
  echo "$name relayed=$relayed instructions=$ir per_packet=$((ir / (relayed > 0 ? relayed : 1)))" \
    | tee -a "$out/instructions.txt"
done
