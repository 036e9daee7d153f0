#!/usr/bin/env bash
# Idle SIP-over-TCP connections against hookflash (issue 14, "bounded resources"): CONNS
# connections opened from many loopback addresses (127.0.1.x, 64 each) and left silent. Reports
# hookflash's RSS before, with them all open, 30 s later (the first-request timeout, 30 s, has
# closed them), the log bytes written meanwhile, and how many connections the daemon still held.
# Run twice: with the limits lifted (memory per connection), and with the defaults
# (sip.tcp_max_connections 4096, sip.tcp_max_per_source 64).
#
#   bench/idle_connections.sh [CONNS]      default 19000 (both processes must stay under the
#                                          hard RLIMIT_NOFILE, 20000 on the measuring machine)
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-19000}
cargo build --release --quiet
hookflash=${HOOKFLASH:-target/release/hookflash}
work=$(mktemp -d /tmp/hookflash-bench-XXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
hf_port=26260
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
open_fds() { ls /proc/$1/fd | wc -l; }

run() {
  local label=$1 limits=$2
  sed -e "s/127.0.0.1:5060/127.0.0.1:$hf_port/" -e "s/127.0.0.1:8080/127.0.0.1:28280/" \
      -e "s/ports: 20000-29999/ports: 30000-30999/" config.example.yaml > "$work/config.yaml"
  sed -i "s/^  challenge_invites: .*/&\n$limits/" "$work/config.yaml"
  cp -r metaflows media "$work/"
  RUST_LOG=info,rsipstack=warn "$hookflash" run --config "$work/config.yaml" > "$work/$label.log" 2>&1 &
  local hpid=$!; pids+=($hpid)
  for _ in $(seq 100); do ss -lnt | grep -q "127.0.0.1:$hf_port " && break; sleep 0.1; done
  local before fds_before
  before=$(rss_kb $hpid); fds_before=$(open_fds $hpid)
  python3 - "$conns" "$hf_port" "$hpid" "$work/$label.log" "$label" "$before" "$fds_before" <<'EOF'
import os, socket, sys, time
conns, port, pid, log, label, before, fds_before = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))
log0 = os.path.getsize(log)
socks = []
t0 = time.time()
for i in range(conns):
    s = socket.socket()
    s.bind((f"127.0.{1 + i // 64 // 250}.{1 + (i // 64) % 250}", 0))
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    socks.append(s)
opened = time.time() - t0
time.sleep(15)  # let the daemon accept what it will (SYNs over the listen queue are retried)
held, with_all = fds() - fds_before, rss()
log_open = os.path.getsize(log) - log0
time.sleep(30)  # past the first-request timeout (30 s from each accept) and a sweep
held_after, after_timeout = fds() - fds_before, rss()
for s in socks:
    s.close()
time.sleep(5)
after_close = rss()
log_total = os.path.getsize(log) - log0
print(f"{label}: {conns} idle connections opened in {opened:.1f} s; daemon held {held} of them "
      f"(RSS {before} KiB before, {with_all} KiB with them: "
      f"{(with_all - before) / max(held, 1):.1f} KiB per held connection); "
      f"30 s later it held {held_after} (RSS {after_timeout} KiB); "
      f"after the client closed all: RSS {after_close} KiB; "
      f"log: {log_open} bytes while opening, {log_total} bytes in all")
EOF
  kill $hpid; wait $hpid 2>/dev/null || true
  grep -c "no complete request within" "$work/$label.log" | sed "s/^/$label: lines about silent connections closed (one per address per sweep): /" || true
  grep -c "SIP over TCP: connection from" "$work/$label.log" | sed "s/^/$label: lines about connections over the limits (once per 10 s): /" || true
}

run lifted "  tcp_max_connections: null\n  tcp_max_per_source: null"
run defaults ""
echo "raw logs: $work"
