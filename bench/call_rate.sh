#!/usr/bin/env bash
# Call rate, hookflash against kamailio (transaction-stateful proxy with Record-Route), side by
# side in one run: sipp uac → relay → sipp uas at each rate for SECONDS, hold 500 ms, sockets with
# 4 MiB buffers. For each: calls, failed, retransmissions, and the relay's CPU seconds.
#
#   bench/call_rate.sh [SECONDS] [RATE...]      e.g. bench/call_rate.sh 20 1000 2000 3000 4000
#
# Needs sipp (sip-tester) and, for the comparison, kamailio. All on 127.0.0.1.
# MAX_CALL_RATE=N sets hookflash's sip.max_call_rate (503 beyond N new calls/s); KAMAILIO=0 skips
# kamailio.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}; shift || true
if [ $# -gt 0 ]; then rates=("$@"); else rates=(1000 2000 3000 4000); fi
cargo build --release --quiet
hookflash=${HOOKFLASH:-target/release/hookflash}   # another build to compare, e.g. HOOKFLASH=/tmp/x/hookflash
work=$(mktemp -d /tmp/hookflash-bench-XXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
uac_port=25070; uas_port=25080; kam_port=25060; hf_port=26060
tck=$(getconf CLK_TCK)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_of() { # CPU ticks of a process and its children
  local total=0
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r /proc/$p/stat ] && total=$((total + $(awk '{print $14+$15}' /proc/$p/stat)))
  done
  echo $total
}

wait_udp() { for _ in $(seq 100); do ss -lnu | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }

# hookflash: the example config on its own ports; 1002 is the load callee; callers are outside
# callers (sipp's From user), so no challenge.
sed -e "s/127.0.0.1:5060/127.0.0.1:$hf_port/" -e "s/127.0.0.1:8080/127.0.0.1:28080/" \
    -e "s/ports: 20000-29999/ports: 30000-59999/" \
    -e "s/password: pass1002/password: pass1002\n        contact: \"sip:1002@127.0.0.1:$uas_port\"/" \
    config.example.yaml > "$work/config.yaml"
sed -i "s/^  tcp: 127.0.0.1:$hf_port.*/  tcp: null/" "$work/config.yaml"
# The load comes from one address (sipp on loopback): no per-source limits.
sed -i "s/^  challenge_invites: .*/&\n  max_source_rate: null\n  max_source_unanswered: null/" "$work/config.yaml"
if [ -n "${MAX_CALL_RATE:-}" ]; then
  sed -i "s/^  challenge_invites: .*/&\n  max_call_rate: $MAX_CALL_RATE/" "$work/config.yaml"
fi
cp -r metaflows media "$work/"
sed -e "s/KAM_PORT/$kam_port/g" -e "s/UAS_PORT/$uas_port/g" bench/kamailio-stateful.cfg > "$work/kamailio.cfg"

run() { # run NAME TARGET_PORT RATE PID
  local name=$1 port=$2 rate=$3 pid=$4
  sipp -sf bench/sipp/uas_200.xml -i 127.0.0.1 -mi 127.0.0.1 -p $uas_port -mp 27100 \
       -buff_size 4194304 -nostdin > "$work/uas-$name-$rate.log" 2>&1 &
  local uas=$!; pids+=($uas)
  wait_udp $uas_port
  local c0; c0=$(cpu_of "$pid")
  (cd "$work" && sipp -sn uac 127.0.0.1:$port -s 1002 -i 127.0.0.1 -mi 127.0.0.1 -p $uac_port -mp 27000 \
       -r "$rate" -m $((rate * secs)) -l $((rate * 4)) -d 500 -buff_size 4194304 \
       -timeout $((secs + 40))s -nostdin -trace_stat -stf "$work/$name-$rate.csv" -fd 1 > "$work/uac-$name-$rate.log" 2>&1) || true
  local c1; c1=$(cpu_of "$pid")
  kill $uas 2>/dev/null || true; wait $uas 2>/dev/null || true
  python3 - "$work/$name-$rate.csv" "$name" "$rate" "$(( (c1 - c0) ))" "$tck" <<'PY'
import csv, sys
path, name, rate, ticks, tck = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter=';'))
last = rows[-1]
g = lambda k: last.get(k, '?').strip()
print(f"{name:10} rate={rate:>5} calls={g('TotalCallCreated'):>6} ok={g('SuccessfulCall(C)'):>6} "
      f"failed={g('FailedCall(C)'):>5} retrans={g('Retransmissions(C)'):>5} "
      f"relay_cpu_s={int(ticks)/int(tck):.1f} resp_ms={g('ResponseTime1(C)')}")
PY
}

for rate in "${rates[@]}"; do
  if [ "${KAMAILIO:-1}" != 0 ] && command -v kamailio >/dev/null; then
    kamailio -f "$work/kamailio.cfg" -P "$work/kam.pid" -m 512 -M 32 -DD -E > "$work/kamailio.log" 2>&1 &
    kpid=$!; pids+=($kpid); wait_udp $kam_port
    run kamailio $kam_port "$rate" $kpid
    kill $kpid; wait $kpid 2>/dev/null || true
  fi
  RUST_LOG=warn "$hookflash" run --config "$work/config.yaml" > "$work/hookflash.log" 2>&1 &
  hpid=$!; pids+=($hpid); wait_udp $hf_port
  run hookflash $hf_port "$rate" $hpid
  kill $hpid; wait $hpid 2>/dev/null || true
done
echo "CSV files and logs: $work"
