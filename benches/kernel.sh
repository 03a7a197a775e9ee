#!/usr/bin/env bash
# Benchmark: bans into the kernel (nftables), moat against the fail2ban way, in one run.
# Root only: everything happens in a network namespace this script creates and deletes.
#
#   sudo benches/kernel.sh
#
# 1. Latency: moat follows a log with the nftables enforcer; a Python writer appends, BANS
#    times (default 500) for a new client (2001:db8::/32, one per /128), the failure that
#    reaches maxretry (2) and waits for `nft monitor` to report the element added to moat's
#    set: line written → address in the kernel set.
# 2. Bulk load: the ledger holds 100,000 active bans (moat read them from a log); moat's table
#    is deleted and moat restarted; the time from starting moat until its first batch (one
#    transaction) is in the kernel, from moat's debug log; the elements are then counted.
# 3. The fail2ban way: one `nft add element` process per address (what fail2ban's nftables
#    action runs per ban), for PER_ADDRESS (default 2,000) addresses, timed; the rate gives
#    100,000 by extrapolation.
# Results on stdout and in $BENCH_DIR/kernel.md. Environment: BENCH_DIR, MOAT_BIN, SKIP_BUILD=1,
# BANS, PER_ADDRESS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
WORK=$BENCH_DIR/kernel
BANS=${BANS:-500}
PER_ADDRESS=${PER_ADDRESS:-2000}
NS=moat-bench-$$
note() { printf '== %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { echo "needs root (network namespace, nftables)" >&2; exit 1; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin moat)
fi
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
rm -rf "$WORK"
mkdir -p "$WORK"
PID=''
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
inns() { ip netns exec "$NS" "$@"; }

start_moat() {
    # Not through `inns`: a function in the background is a subshell, and its PID not moat's.
    ip netns exec "$NS" env MOAT_LOG="${MOAT_LOG:-info}" "$MOAT" run -c "$WORK/moat.toml" 2>>"$WORK/daemon.log" &
    PID=$!
    for _ in $(seq 200); do "$MOAT" status -c "$WORK/moat.toml" >/dev/null 2>&1 && return; sleep 0.02; done
    echo "moat did not start" >&2
    exit 1
}
stop_moat() { kill -TERM "$PID"; wait "$PID" || true; PID=''; }

cat >"$WORK/moat.toml" <<TOML
[daemon]
state_dir = "$WORK/state"
socket = "$WORK/moat.sock"
follow_from = "start"

[enforce]
use = ["nftables"]

[jails.portainer]
filter = "portainer"
sources = ["$WORK/access.log"]
maxretry = 2
ipv6_prefix = 128
max_clients = 200000
TOML
: >"$WORK/access.log"

# 1. Latency
note "latency: $BANS bans, line written → element in the kernel"
start_moat
inns python3 - "$WORK/access.log" "$BANS" >"$WORK/latencies" <<'PY'
import ipaddress, os, subprocess, sys, time, threading
log, bans = sys.argv[1], int(sys.argv[2])
mon = subprocess.Popen(["nft", "monitor", "new", "elements"], stdout=subprocess.PIPE, text=True)
seen = {}
def reader():
    for line in mon.stdout:
        t = time.time_ns()
        for word in line.replace("{", " ").replace("}", " ").replace(",", " ").split():
            seen.setdefault(word, t)
threading.Thread(target=reader, daemon=True).start()
time.sleep(0.3)
fd = os.open(log, os.O_WRONLY | os.O_APPEND)
def line(ip):
    t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return f'{ip} - - [{t}] "POST /api/auth HTTP/1.1" 422 52 "-" "x"\n'.encode()
for n in range(1, bans + 1):
    ip = str(ipaddress.IPv6Address(f"2001:db8:7::{n >> 16:x}:{n & 0xffff:x}"))
    os.write(fd, line(ip))
    time.sleep(0.003)
    t0 = time.time_ns()
    os.write(fd, line(ip))
    deadline = time.monotonic() + 2
    while ip not in seen and time.monotonic() < deadline:
        time.sleep(0.0001)
    if ip in seen:
        print(seen[ip] - t0)
    time.sleep(0.003)
mon.kill()
PY
stop_moat

# 2. Bulk load of 100,000
note "bulk: 100,000 bans into the ledger, then a restart re-applies them"
python3 - "$WORK/access.log" <<'PY'
import sys, time
t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
with open(sys.argv[1], "a") as f:
    for n in range(100_000):
        ip = f"2001:db8:8::{n >> 16:x}:{n & 0xffff:x}"
        f.write(f'{ip} - - [{t}] "POST /api/auth HTTP/1.1" 422 52 "-" "x"\n' * 2)
PY
start_moat
until inns nft get element inet moat ban6 '{ 2001:db8:8::1:869f }' >/dev/null 2>&1; do sleep 0.2; done
stop_moat
inns nft delete table inet moat
: >"$WORK/daemon.log"
t0=$(date +%s%N)
MOAT_LOG=info,moat::enforce::nftables=debug start_moat
# The end of moat's first batch, from its own log (a probe such as `nft get element` would
# itself read all 100,000 elements and be slower than the load it measures).
until grep -q 'nft batch changes=100' "$WORK/daemon.log"; do sleep 0.01; done
bulk_ms=$(python3 - "$WORK/daemon.log" "$t0" <<'PY'
import re, sys, datetime
line = next(l for l in open(sys.argv[1]) if "nft batch changes=100" in l)
stamp = re.match(r"\S+", re.sub(r"\x1b\[[0-9;]*m", "", line)).group(0)
at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
print(round((at - int(sys.argv[2]) / 1e9) * 1000))
PY
)
elements=$(inns nft list set inet moat ban6 | grep -o '2001:db8:8::' | wc -l)
stop_moat

# 3. The fail2ban way
note "one nft process per address, $PER_ADDRESS addresses"
inns nft add table inet f2b
inns nft add set inet f2b addr6 '{ type ipv6_addr; }'
t0=$(date +%s%N)
for n in $(seq 1 "$PER_ADDRESS"); do
    inns nft add element inet f2b addr6 "{ 2001:db8:9::$(printf %x "$n") }"
done
per_ms=$((($(date +%s%N) - t0) / 1000000))

python3 - "$WORK/latencies" "$bulk_ms" "$elements" "$per_ms" "$PER_ADDRESS" <<'PY' | tee "$BENCH_DIR/kernel.md"
import sys
xs = sorted(int(l) / 1e6 for l in open(sys.argv[1]) if l.strip())
bulk, elements, per_ms, per_n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def pct(p):
    return xs[max(0, -(-len(xs) * p // 100) - 1)]
print("| measure | moat | the fail2ban way |")
print("|---|---|---|")
print(f"| line written → address in the kernel set ({len(xs)} bans) | p50 {pct(50):.2f} ms, p99 {pct(99):.2f} ms, max {xs[-1]:.2f} ms | — |")
per = per_ms / per_n
print(f"| 100,000 bans into the kernel | {bulk} ms from starting moat ({elements} elements, one transaction, `ip netns exec` and reading the ledger included) | {per:.2f} ms per address ({per_n} `nft add element` processes in {per_ms} ms): about {per * 100_000 / 1000:.0f} s for 100,000 |")
PY
