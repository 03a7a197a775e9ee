#!/usr/bin/env bash
# Benchmark: ban latency, moat against fail2ban 1.0.2 (Debian), same method, same run.
#
#   benches/latency.sh
#
# Latency is the time from writing the failure line that reaches maxretry to the ban action
# running. Both tools follow their own log file with an equivalent jail (the Portainer rule,
# maxretry 2) and a "stamping" action that creates a file named after the client:
#   moat      the exec enforcer, argv ["/usr/bin/touch", "STAMPS/{ip}"] (no shell);
#   fail2ban  an action whose actionban is `touch STAMPS/<ip>` (fail2ban runs it via a shell),
#             backend pyinotify, the filter's fast datepattern.
# A Python writer does, BANS times (default 1000) and for a new client each time (2001:db8::/32,
# one per /128): write a failure, write the second failure and note the time (ns), then poll
# every 0.1 ms until the stamp file appears; latency = the time it was seen − that time. (Not
# the file's mtime: the kernel stamps files with a clock of jiffy resolution, coarser than what
# is measured.) Both include starting `touch`; moat also reports its internal latency (line
# read → enforcer received) in its `moat_ban_latency_seconds` metric, printed below.
#
# Results: p50/p90/p99/max in ms, and the ratio of medians, on stdout and in
# $BENCH_DIR/latency.md. Environment: BANS, BENCH_DIR (default target/bench), MOAT_BIN,
# SKIP_BUILD=1, SKIP_F2B=1, SKIP_NOTIFY=1. No network, no firewall, no root needed.
#
# A second moat run adds the three notifiers (webhook, email, abuseipdb) pointed at loopback
# receivers that never answer or refuse: the exec enforcer's latency beside the first run's
# shows whether a notifier can hold up a ban.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
WORK=$BENCH_DIR/latency
BANS=${BANS:-1000}
note() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    note "cargo build --release"
    (cd "$ROOT" && cargo build --release --bin moat)
fi
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
rm -rf "$WORK"
mkdir -p "$WORK"
# shellcheck source=benches/jails.sh
source "$ROOT/benches/jails.sh"

PIDS=()
F2B_DIR=''
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n $F2B_DIR ]] && /usr/bin/python3 /usr/bin/fail2ban-client -c "$F2B_DIR" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# measure NAME LOG STAMPS TIMEOUT_S: prints one latency in ns per line on stdout.
measure() {
    python3 - "$2" "$3" "$BANS" "$4" "$1" <<'PY'
import ipaddress, os, sys, time
log, stamps, bans, timeout, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
base = 1 if name == "moat" else 2
def line(ip):
    t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return f'{ip} - - [{t}] "POST /api/auth HTTP/1.1" 422 52 "-" "python-requests/2.31"\n'.encode()
timeouts = 0
for n in range(1, bans + 1):
    # Canonical text, as both tools print the address they ban.
    ip = str(ipaddress.IPv6Address(f"2001:db8:{base:x}::{n >> 16:x}:{n & 0xffff:x}"))
    os.write(fd, line(ip))
    time.sleep(0.005)
    data = line(ip)
    t0 = time.time_ns()
    os.write(fd, data)
    path = os.path.join(stamps, ip)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            timeouts += 1
            break
        time.sleep(0.0001)
    else:
        print(time.time_ns() - t0, flush=True)
    time.sleep(0.005)
print(f"timeouts {timeouts}", file=sys.stderr)
PY
}

# ---------------------------------------------------------------------------------------------
# moat: run_moat DIR METRICS_PORT USE EXTRA_TOML, leaving DIR/latencies, DIR/timeouts and
# DIR/internal (the metric's summary).
run_moat() {
    local D=$1 port=$2 uses=$3 extra=$4
    mkdir -p "$D/stamps"
    : >"$D/access.log"
    cat >"$D/moat.toml" <<TOML
[daemon]
state_dir = "$D/state"
socket = "$D/moat.sock"
metrics = "127.0.0.1:$port"

[enforce]
use = [$uses]

[enforce.exec]
ban = ["/usr/bin/touch", "$D/stamps/{ip}"]
$extra
[jails.portainer]
filter = "portainer"
sources = ["$D/access.log"]
maxretry = 2
findtime = "10m"
bantime = "1h"
ipv6_prefix = 128
TOML
    "$MOAT" run -c "$D/moat.toml" 2>"$D/daemon.log" &
    local pid=$!
    PIDS+=($pid)
    for _ in $(seq 100); do "$MOAT" status -c "$D/moat.toml" >/dev/null 2>&1 && break; sleep 0.05; done
    measure moat "$D/access.log" "$D/stamps" 2 >"$D/latencies" 2>"$D/timeouts"
    python3 - "$port" >"$D/internal" <<'PY'
import socket, sys, re
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
body = b""
while chunk := s.recv(65536):
    body += chunk
text = body.decode()
buckets = [(float(le), int(v)) for le, v in re.findall(r'moat_ban_latency_seconds_bucket\{le="([0-9.e+-]+)"\} (\d+)', text)]
count = int(re.search(r"moat_ban_latency_seconds_count (\d+)", text).group(1))
total = float(re.search(r"moat_ban_latency_seconds_sum ([0-9.e+-]+)", text).group(1))
def q(p):
    for le, v in buckets:
        if v >= p * count:
            return le * 1000
print(f"{count} receipts, mean {total / count * 1000:.3f} ms, p50 ≤ {q(0.5):.3f} ms, p99 ≤ {q(0.99):.3f} ms")
PY
    "$MOAT" status -c "$D/moat.toml" >"$D/status.txt" 2>&1 || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

D=$WORK/moat
note "moat: $BANS bans"
run_moat "$D" "${METRICS_PORT:-19717}" '"exec"' ''
internal=$(cat "$D/internal")

# The same with the three notifiers, each pointed at a receiver that never helps: the webhook
# and the mail server accept connections and never answer (each request waits for its
# timeout), AbuseIPDB's port refuses connections. Their queues fill and retry; the exec
# enforcer must not notice. SKIP_NOTIFY=1 skips this run.
N=$WORK/moat-notify
if [[ ${SKIP_NOTIFY:-0} != 1 ]]; then
    mkdir -p "$N"
    python3 - "$N/ports" <<'PY' &
import socket, sys, time
held, ports = [], []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    held.append(s)
    ports.append(s.getsockname()[1])
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
ports.append(closed.getsockname()[1])
closed.close()
open(sys.argv[1], "w").write(" ".join(map(str, ports)))
conns = []
import select
while True:
    r, _, _ = select.select(held, [], [], 1)
    for s in r:
        c, _ = s.accept()
        conns.append(c)   # accepted, never read, never answered
PY
    PIDS+=($!)
    for _ in $(seq 100); do [[ -s $N/ports ]] && break; sleep 0.05; done
    read -r slow_http slow_smtp refused <"$N/ports" || true
    (umask 077 && echo "bench-key" >"$N/abuseipdb.key")
    note "moat with webhook, email and abuseipdb: $BANS bans"
    run_moat "$N" "$((${METRICS_PORT:-19717} + 1))" '"exec", "webhook", "email", "abuseipdb"' "
[enforce.webhook]
url = \"http://127.0.0.1:$slow_http/hook\"
digest_seconds = 1
timeout_seconds = 5

[enforce.email]
server = \"127.0.0.1\"
port = $slow_smtp
security = \"plain\"
from = \"moat@example.org\"
to = [\"admin@example.org\"]
digest_seconds = 1
timeout_seconds = 5

[enforce.abuseipdb]
key_file = \"$N/abuseipdb.key\"
api = \"http://127.0.0.1:$refused/api/v2\"
"
fi

# ---------------------------------------------------------------------------------------------
# fail2ban
if [[ ${SKIP_F2B:-0} != 1 ]]; then
    command -v fail2ban-server >/dev/null || die "fail2ban is not installed (apt-get install fail2ban)"
    F2B_DIR=$WORK/f2b
    mkdir -p "$F2B_DIR/filter.d" "$F2B_DIR/action.d" "$F2B_DIR/stamps"
    : >"$F2B_DIR/access.log"
    cat >"$F2B_DIR/fail2ban.conf" <<INI
[Definition]
loglevel = INFO
logtarget = $F2B_DIR/fail2ban.log
socket = $F2B_DIR/fail2ban.sock
pidfile = $F2B_DIR/fail2ban.pid
dbfile = :memory:
INI
    write_f2b_filter "$F2B_DIR/filter.d/portainer.conf" "${JAILS[0]}"
    cat >"$F2B_DIR/action.d/stamp.conf" <<INI
[Definition]
actionstart =
actionstop =
actioncheck =
actionban = touch $F2B_DIR/stamps/<ip>
actionunban = rm -f $F2B_DIR/stamps/<ip>
INI
    cat >"$F2B_DIR/jail.conf" <<INI
[DEFAULT]
backend = pyinotify
ignoreself = false

[portainer]
enabled = true
filter = portainer
action = stamp
logpath = $F2B_DIR/access.log
maxretry = 2
findtime = 600
bantime = 3600
INI
    note "fail2ban $(fail2ban-server --version 2>&1 | head -1): $BANS bans"
    /usr/bin/python3 /usr/bin/fail2ban-client -c "$F2B_DIR" -x start >/dev/null 2>&1
    for _ in $(seq 100); do
        /usr/bin/python3 /usr/bin/fail2ban-client -c "$F2B_DIR" status portainer >/dev/null 2>&1 && break
        sleep 0.1
    done
    measure fail2ban "$F2B_DIR/access.log" "$F2B_DIR/stamps" 5 >"$WORK/f2b.latencies" 2>"$WORK/f2b.timeouts"
    /usr/bin/python3 /usr/bin/fail2ban-client -c "$F2B_DIR" stop >/dev/null 2>&1 || true
    F2B_DIR=''
fi

python3 - "$D/latencies" "$(cat "$D/timeouts")" "$WORK/f2b.latencies" "$(cat "$WORK/f2b.timeouts" 2>/dev/null || echo)" "$internal" "$BANS" "$N/latencies" "$(cat "$N/timeouts" 2>/dev/null || echo)" "$(cat "$N/internal" 2>/dev/null || echo)" <<'PY' | tee "$BENCH_DIR/latency.md"
import os, sys
def load(path):
    if not os.path.exists(path):
        return []
    return sorted(int(l) / 1e6 for l in open(path) if l.strip())
def pct(xs, p):
    # nearest rank
    k = max(1, -(-len(xs) * p // 100))
    return xs[int(k) - 1]
rows = [("moat (exec enforcer)", load(sys.argv[1]), sys.argv[2]), ("fail2ban 1.0.2 (pyinotify)", load(sys.argv[3]), sys.argv[4]),
        ("moat (exec + webhook, email, abuseipdb at dead receivers)", load(sys.argv[7]), sys.argv[8])]
print(f"Ban latency over {sys.argv[6]} bans each: failure line written → stamping action ran (ms)\n")
print("| tool | bans | p50 | p90 | p99 | max | timeouts |")
print("|---|---|---|---|---|---|---|")
for name, xs, to in rows:
    if not xs:
        continue
    print(f"| {name} | {len(xs)} | {pct(xs,50):.2f} | {pct(xs,90):.2f} | {pct(xs,99):.2f} | {xs[-1]:.2f} | {to.split()[-1] if to.strip() else '-'} |")
m, f = rows[0][1], rows[1][1]
if m and f:
    print(f"\nfail2ban's median is {pct(f,50) / pct(m,50):.0f}× moat's.")
print(f"\nmoat's own measure (line read → enforcer received, from its metrics): {sys.argv[5]}")
if sys.argv[9].strip():
    print(f"with the three notifiers (every enforcer's receipt counted): {sys.argv[9]}")
PY
