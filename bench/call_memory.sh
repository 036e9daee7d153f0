#!/usr/bin/env bash
# Memory per established call: hookflash's RSS growth with CALLS calls up at once (sipp uac →
# hookflash → sipp uas, 200 new calls/s, each held 120 s), divided by CALLS.
#
#   bench/call_memory.sh [CALLS]      default 2000
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-2000}
cargo build --release --quiet
hookflash=${HOOKFLASH:-target/release/hookflash}   # another build to compare, e.g. HOOKFLASH=/tmp/x/hookflash
work=$(mktemp -d /tmp/hookflash-bench-XXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
uac_port=25170; uas_port=25180; hf_port=26160
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_udp() { for _ in $(seq 100); do ss -lnu | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }

sed -e "s/127.0.0.1:5060/127.0.0.1:$hf_port/" -e "s/127.0.0.1:8080/127.0.0.1:28180/" \
    -e "s/ports: 20000-29999/ports: 30000-59999/" \
    -e "s/password: pass1002/password: pass1002\n        contact: \"sip:1002@127.0.0.1:$uas_port\"/" \
    config.example.yaml > "$work/config.yaml"
sed -i "s/^  tcp: 127.0.0.1:$hf_port.*/  tcp: null/" "$work/config.yaml"
# The load comes from one address (sipp on loopback): no per-source limits.
sed -i "s/^  challenge_invites: .*/&\n  max_source_rate: null\n  max_source_unanswered: null/" "$work/config.yaml"
cp -r metaflows media "$work/"

RUST_LOG=info,rsipstack=warn "$hookflash" run --config "$work/config.yaml" > "$work/hookflash.log" 2>&1 &
hpid=$!; pids+=($hpid); wait_udp $hf_port
sipp -sf bench/sipp/uas_200.xml -i 127.0.0.1 -mi 127.0.0.1 -p $uas_port -mp 27100 -buff_size 4194304 -nostdin > "$work/uas.log" 2>&1 &
pids+=($!); wait_udp $uas_port
# Warm up: one round of calls that end, so allocator pools and rsipstack's tables exist.
(cd "$work" && sipp -sn uac 127.0.0.1:$hf_port -s 1002 -i 127.0.0.1 -p $uac_port -mp 27000 -r 200 -m 400 -d 100 \
   -nostdin -timeout 60s > "$work/warmup.log" 2>&1) || true
sleep 35   # rsipstack keeps finished transactions for about 32 s
before=$(rss_kb $hpid)
answered0=$(grep -c "answered" "$work/hookflash.log" || true)
(cd "$work" && exec sipp -sn uac 127.0.0.1:$hf_port -s 1002 -i 127.0.0.1 -p $uac_port -mp 27000 -r 200 -m "$calls" \
   -l $((calls + 10)) -d 120000 -buff_size 4194304 -nostdin -timeout 300s > "$work/uac.log" 2>&1) &
pids+=($!)
for _ in $(seq 600); do
  up=$(( $(grep -c "answered" "$work/hookflash.log" || true) - answered0 ))
  [ "$up" -ge "$calls" ] && break
  sleep 0.5
done
sleep 35   # let the set-up transactions age out too: what stays is the calls themselves
after=$(rss_kb $hpid)
echo "calls=$up rss_before_kb=$before rss_after_kb=$after per_call_kb=$(( (after - before) / (up > 0 ? up : 1) ))"
