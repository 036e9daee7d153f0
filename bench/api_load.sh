#!/usr/bin/env bash
# The HTTP API under load, with CALLS live calls (sipp uac → hookflash → sipp uas, held):
#  1. GET /v1/calls (a page of 10, VoIPBIN's default) on 16 and 64 keep-alive connections;
#  2. the time from POST /v1/transfers to the target's INVITE, alone and while (1) runs.
# The API's rate limit is off for the run (rate_limit: null).
#
#   bench/api_load.sh [CALLS] [SECONDS]      defaults 1000 and 10
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-1000}
seconds=${2:-10}
cargo build --release --quiet
cargo build --release --quiet --example api_load
hookflash=${HOOKFLASH:-target/release/hookflash}
load=target/release/examples/api_load
work=$(mktemp -d /tmp/hookflash-bench-XXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
uac_port=25270; uas_port=25280; hf_port=26260; api_port=28280; target_port=25290
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_udp() { for _ in $(seq 100); do ss -lnu | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }

sed -e "s/127.0.0.1:5060/127.0.0.1:$hf_port/" -e "s/127.0.0.1:8080/127.0.0.1:$api_port/" \
    -e "s/ports: 20000-29999/ports: 30000-59999/" \
    -e "s/^  tokens:/  rate_limit: null\n  tokens:/" \
    -e "s/challenge_invites: true/challenge_invites: false/" \
    -e "s/password: pass1002/password: pass1002\n        contact: \"sip:1002@127.0.0.1:$uas_port\"/" \
    -e "s/password: pass1003/password: pass1003\n        contact: \"sip:1003@127.0.0.1:$target_port\"/" \
    config.example.yaml > "$work/config.yaml"
sed -i "s/^  tcp: 127.0.0.1:$hf_port.*/  tcp: null/" "$work/config.yaml"
# The load comes from one address (sipp on loopback): no per-source limits.
sed -i "s/^  challenge_invites: .*/&\n  max_source_rate: null\n  max_source_unanswered: null/" "$work/config.yaml"
cp -r metaflows media "$work/"

RUST_LOG=warn "$hookflash" run --config "$work/config.yaml" > "$work/hookflash.log" 2>&1 &
hpid=$!; pids+=($hpid); wait_udp $hf_port
sipp -sf bench/sipp/uas_200.xml -i 127.0.0.1 -mi 127.0.0.1 -p $uas_port -mp 27200 -buff_size 4194304 -nostdin > "$work/uas.log" 2>&1 &
pids+=($!); wait_udp $uas_port
(cd "$work" && exec sipp -sn uac 127.0.0.1:$hf_port -s 1002 -i 127.0.0.1 -p $uac_port -mp 27300 -r 200 -m "$calls" \
   -l $((calls + 10)) -d 3600000 -buff_size 4194304 -nostdin -timeout 3600s > "$work/uac.log" 2>&1) &
pids+=($!)
api="127.0.0.1:$api_port"
for _ in $(seq 600); do
  up=$(curl -s -H "X-Auth-Token: demo-token" "http://$api/metrics" | awk '/^hookflash_calls_active/ {print $2}')
  [ "${up:-0}" -ge "$calls" ] && break
  sleep 0.5
done
sleep 2
echo "live calls: $up  (machine: $(nproc) cores, $(uname -r))"
$load get-calls "$api" demo-token 16 "$seconds"
$load get-calls "$api" demo-token 64 "$seconds"
$load get-calls "$api" demo-token 16 "$seconds" "/v1/calls?page_size=100"
$load transfer "$api" demo-token $target_port 300
$load get-calls "$api" demo-token 16 $((seconds + 5)) > "$work/background.txt" &
bg=$!
sleep 1
echo "while GET /v1/calls runs on 16 connections:"
$load transfer "$api" demo-token $target_port 300
wait $bg; cat "$work/background.txt"
echo "hookflash CPU: $(awk '{print ($14+$15)/100 " s"}' /proc/$hpid/stat)"
