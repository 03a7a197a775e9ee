#!/usr/bin/env bash
# Benchmark: ban latency of the daemon, moat against fail2ban 1.0.2 (Debian), same input, same run.
#
#   benches/latency.sh                 # BANS=1000 bans per tool
#   BANS=200 SKIP_F2B=1 benches/latency.sh
#
# What is measured: the time from writing the failure line that reaches maxretry to the ban
# action running. Each tool follows its own log file with an equivalent jail and a "stamping"
# action that creates a file named after the banned client:
#   moat      `moat run -c CONFIG`: built-in filter `portainer`, maxretry 2, findtime 10m,
#             bantime 1h, ipv6_prefix 128, follow_from "end"; the `exec` enforcer with argv
#             ["/usr/bin/touch", "STAMPS/{ip}"] (no shell).
#   fail2ban  `fail2ban-client -c DIR -x start` with a private configuration directory (the
#             system's /etc/fail2ban is not read): one jail, an equivalent filter
#             (`^<HOST> - \S+ \[\] "POST /api/auth[^"]*" 422\s`, with an explicit datepattern
#             for `%d/%b/%Y:%H:%M:%S %z`, checked with fail2ban-regex before the run), maxretry 2,
#             findtime 600, bantime 3600, backend pyinotify (polling if /usr/bin/python3 has no
#             pyinotify; the table says which), an action whose actionban is
#             `touch STAMPS/<ip>` (fail2ban runs it through a shell) and nothing else.
#
# How: one Python writer, the same for both tools, bans one client at a time. For each client
# (a distinct address: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, then 2001:db8::N) it
# appends an nginx "combined" line for a failed Portainer login (`POST /api/auth ... 422`, the
# current UTC time in the date field) with os.write, waits 5 ms, appends the second one and
# notes time.time_ns() just before that write, then waits (inotify on the stamp directory, no
# busy polling) until the stamp file for that client is created, or a timeout (2 s for moat,
# 5 s for fail2ban, counted as "timeouts"), then pauses PACE_MS (default 10, plus a random
# 0..PACE_JITTER_MS) before the next client. Latency = time the creation event was received −
# time of the write; it includes the tool's reaction and starting `touch` (plus a shell for
# fail2ban), and the inotify wake-up of the writer (tens of microseconds). WARMUP (default 5)
# bans per tool come first and are not counted.
#
# Why not the stamp file's mtime: the kernel stamps a new file with its coarse clock (one
# jiffy, 4 ms at HZ=250), so mtime − write time is off by up to a jiffy and often negative at
# moat's latencies. It is still recorded and its median printed below the table, for reference.
#
# Results: p50, p90, p99 and max (nearest rank, in ms), timeouts, and the ratio of medians, as
# a markdown table on stdout and in $BENCH_DIR/latency.md. Raw data (one line per ban: address,
# write time, event time, mtime, all in ns) in $BENCH_DIR/latency/{moat,f2b}/latencies.tsv.
# Nothing touches the network or the firewall, nothing needs root, cargo is never run.
#
# Environment:
#   BANS        bans measured per tool (default 1000)
#   BENCH_DIR   where latency.md and the work directory latency/ go (default target/bench)
#   MOAT_BIN    moat binary (default target/release/moat, from the repository root)
#   SKIP_F2B=1  leave fail2ban out
#   WARMUP      uncounted bans before the measured ones (default 5)
#   PACE_MS     pause between bans in ms (default 10)
#   PACE_JITTER_MS  random extra pause, uniform in 0..N ms (default 0; fixed seed)
#
# Caveat on fail2ban's figure: its actions thread does not wake up on a new ban; it polls for
# pending bans with sleeps of 0.2, 0.4, 0.6, 0.8 s (Utils.wait_for, restarted every 2 s and
# after each ban). Bans in quick succession, as here, always land in the first 0.2 s sleep, so
# fail2ban's latency is about 200 ms minus the pause; a lone ban waits 0-0.8 s for the poll.
# PACE_JITTER_MS=2000 (slow: about 1 s per ban) samples that case.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-target/bench}
[[ $BENCH_DIR == /* ]] || BENCH_DIR=$ROOT/$BENCH_DIR
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
BANS=${BANS:-1000}
WARMUP=${WARMUP:-5}
PACE_MS=${PACE_MS:-10}
PACE_JITTER_MS=${PACE_JITTER_MS:-0}
SKIP_F2B=${SKIP_F2B:-0}
PY=/usr/bin/python3
WORK=$BENCH_DIR/latency
START=$EPOCHREALTIME

note() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

[[ $BANS =~ ^[1-9][0-9]*$ ]] || die "BANS must be a positive integer, not '$BANS'"
[[ -x $MOAT ]] || die "no moat binary at $MOAT (build it, or set MOAT_BIN)"
if [[ $SKIP_F2B != 1 ]]; then
    command -v fail2ban-server >/dev/null && command -v fail2ban-client >/dev/null ||
        die "fail2ban is not installed (apt-get install fail2ban), or set SKIP_F2B=1"
fi

rm -rf "$WORK"
mkdir -p "$WORK/moat/stamps" "$WORK/f2b/stamps" "$WORK/f2b/filter.d" "$WORK/f2b/action.d"

# ---------------------------------------------------------------------------------------------
# Background processes: stopped on any exit.
MOAT_PID=''
F2B_DIR=''
cleanup() {
    if [[ -n $MOAT_PID ]]; then
        kill -TERM "$MOAT_PID" 2>/dev/null || true
        wait "$MOAT_PID" 2>/dev/null || true
        MOAT_PID=''
    fi
    if [[ -n $F2B_DIR ]]; then
        local pid=''
        [[ -f $F2B_DIR/fail2ban.pid ]] && pid=$(cat "$F2B_DIR/fail2ban.pid" 2>/dev/null || true)
        timeout 20 fail2ban-client -c "$F2B_DIR" stop >/dev/null 2>&1 || true
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            sleep 1
            kill -TERM "$pid" 2>/dev/null || true
        fi
        F2B_DIR=''
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The writer. measure.py LOG STAMPS TIMEOUT_S OUT: prints "timeouts N" on stdout at the end.
cat >"$WORK/measure.py" <<'PY'
import ctypes, ctypes.util, ipaddress, os, random, select, struct, sys, time

log, stamps, timeout, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
bans, warmup, pace = int(os.environ["BANS"]), int(os.environ["WARMUP"]), int(os.environ["PACE_MS"]) / 1000
jitter = int(os.environ["PACE_JITTER_MS"]) / 1000
rng = random.Random(42)

def addresses():
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"):
        yield from (str(h) for h in ipaddress.ip_network(net).hosts())
    n = 1
    while True:
        yield str(ipaddress.IPv6Address(f"2001:db8::") + n)  # canonical text, as both tools print it
        n += 1

def line(ip):
    t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return f'{ip} - - [{t}] "POST /api/auth HTTP/1.1" 422 52 "-" "python-requests/2.31"\n'.encode()

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
IN_CREATE, IN_MOVED_TO, IN_NONBLOCK, IN_CLOEXEC = 0x100, 0x80, 0o4000, 0o2000000
ino = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
if ino < 0 or libc.inotify_add_watch(ino, stamps.encode(), IN_CREATE | IN_MOVED_TO) < 0:
    sys.exit(f"inotify: {os.strerror(ctypes.get_errno())}")
poller = select.poll()
poller.register(ino, select.POLLIN)

def created():
    """Names created since the last call (non-blocking read of the inotify queue)."""
    names = []
    try:
        buf = os.read(ino, 65536)
    except BlockingIOError:
        return names
    i = 0
    while i < len(buf):
        _wd, _mask, _cookie, n = struct.unpack_from("iIII", buf, i)
        names.append(buf[i + 16:i + 16 + n].rstrip(b"\0").decode())
        i += 16 + n
    return names

fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
timeouts = 0
with open(out, "w") as f:
    for k, ip in zip(range(warmup + bans), addresses()):
        os.write(fd, line(ip))
        time.sleep(0.005)
        created()  # drop stale events (a ban that came after its timeout)
        data = line(ip)
        t0 = time.time_ns()
        os.write(fd, data)
        deadline = t0 + int(timeout * 1e9)
        seen = None
        while seen is None:
            left = (deadline - time.time_ns()) / 1e6
            if left <= 0:
                break
            if poller.poll(left) and ip in created():
                seen = time.time_ns()
        if k >= warmup:
            if seen is None:
                timeouts += 1
                f.write(f"{ip}\t{t0}\t-\t-\n")
            else:
                mtime = os.stat(os.path.join(stamps, ip)).st_mtime_ns
                f.write(f"{ip}\t{t0}\t{seen}\t{mtime}\n")
        time.sleep(pace + rng.uniform(0, jitter))
print(f"timeouts {timeouts}")
PY

measure() { # NAME LOG STAMPS TIMEOUT_S
    BANS=$BANS WARMUP=$WARMUP PACE_MS=$PACE_MS PACE_JITTER_MS=$PACE_JITTER_MS $PY "$WORK/measure.py" "$2" "$3" "$4" "$WORK/$1/latencies.tsv" |
        awk '{print $2}' >"$WORK/$1/timeouts"
}

# ---------------------------------------------------------------------------------------------
# moat
D=$WORK/moat
: >"$D/access.log"
cat >"$D/moat.toml" <<TOML
[daemon]
state_dir = "$D/state"
socket = "$D/moat.sock"
follow_from = "end"

[enforce]
use = ["exec"]

[enforce.exec]
ban = ["/usr/bin/touch", "$D/stamps/{ip}"]

[jails.portainer]
filter = "portainer"
sources = ["$D/access.log"]
maxretry = 2
findtime = "10m"
bantime = "1h"
ipv6_prefix = 128
TOML
note "moat $("$MOAT" --version | awk '{print $2}'): $BANS bans (+$WARMUP warm-up)"
"$MOAT" run -c "$D/moat.toml" 2>"$D/daemon.log" &
MOAT_PID=$!
for _ in $(seq 200); do
    "$MOAT" status -c "$D/moat.toml" >/dev/null 2>&1 && break
    kill -0 "$MOAT_PID" 2>/dev/null || die "moat exited at start; see $D/daemon.log"
    sleep 0.05
done
"$MOAT" status -c "$D/moat.toml" >/dev/null 2>&1 || die "moat did not answer status in 10 s; see $D/daemon.log"
measure moat "$D/access.log" "$D/stamps" 2
kill -TERM "$MOAT_PID"
wait "$MOAT_PID" || true
MOAT_PID=''

# ---------------------------------------------------------------------------------------------
# fail2ban
BACKEND=-
if [[ $SKIP_F2B != 1 ]]; then
    F=$WORK/f2b
    : >"$F/access.log"
    if $PY -c 'import pyinotify' 2>/dev/null; then BACKEND=pyinotify; else BACKEND=polling; fi
    cat >"$F/fail2ban.conf" <<INI
[Definition]
loglevel = INFO
logtarget = $F/fail2ban.log
socket = $F/fail2ban.sock
pidfile = $F/fail2ban.pid
dbfile = :memory:
allowipv6 = auto
INI
    # The ini reader strips a trailing blank, hence 422\s; %% is a literal % in these files.
    cat >"$F/filter.d/portainer.conf" <<'INI'
[Definition]
failregex = ^<HOST> - \S+ \[\] "POST /api/auth[^"]*" 422\s
ignoreregex =
datepattern = ^[^\[]*\[(%%d/%%b/%%Y:%%H:%%M:%%S %%z)\]
INI
    cat >"$F/action.d/stamp.conf" <<INI
[Definition]
actionstart =
actionstop =
actioncheck =
actionban = touch $F/stamps/<ip>
actionunban = rm -f $F/stamps/<ip>
INI
    cat >"$F/jail.conf" <<INI
[portainer]
enabled = true
filter = portainer
action = stamp
backend = $BACKEND
logpath = $F/access.log
maxretry = 2
findtime = 600
bantime = 3600
INI
    # The filter must match the writer's lines (IPv4 and IPv6) and nothing else.
    now=$(date -u +%d/%b/%Y:%H:%M:%S)
    for a in 203.0.113.7 2001:db8::3e9; do
        printf '%s - - [%s +0000] "POST /api/auth HTTP/1.1" 422 52 "-" "python-requests/2.31"\n' "$a" "$now"
    done >"$F/sample.log"
    printf '203.0.113.8 - - [%s +0000] "POST /api/auth HTTP/1.1" 200 52 "-" "-"\n' "$now" >>"$F/sample.log"
    fail2ban-regex "$F/sample.log" "$F/filter.d/portainer.conf" >"$F/regex-check.txt" 2>&1 || true
    grep -q '^Lines: 3 lines, 0 ignored, 2 matched, 1 missed' "$F/regex-check.txt" ||
        die "the fail2ban filter does not match as expected; see $F/regex-check.txt"

    VERSION=$(fail2ban-server --version 2>&1 | awk '{sub(/^v/, "", $2); print $2; exit}')
    note "fail2ban $VERSION (backend $BACKEND): $BANS bans (+$WARMUP warm-up)"
    F2B_DIR=$F
    fail2ban-client -c "$F" -x start >"$F/start.out" 2>&1 || die "fail2ban did not start; see $F/start.out and $F/fail2ban.log"
    for _ in $(seq 100); do
        fail2ban-client -c "$F" status portainer >/dev/null 2>&1 && break
        sleep 0.1
    done
    fail2ban-client -c "$F" status portainer >/dev/null 2>&1 || die "fail2ban's jail is not up; see $F/fail2ban.log"
    measure f2b "$F/access.log" "$F/stamps" 5
    fail2ban-client -c "$F" status portainer >"$F/status.txt" 2>&1 || true
    cleanup
fi

# ---------------------------------------------------------------------------------------------
# Results
ELAPSED=$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
$PY - "$WORK" "$BANS" "$BACKEND" "${VERSION:-}" "$("$MOAT" --version | awk '{print $2}')" "$ELAPSED" "$WARMUP" "$PACE_MS" "$PACE_JITTER_MS" <<'PY' | tee "$BENCH_DIR/latency.md"
import os, sys
work, bans, backend, f2b_version, moat_version, elapsed, warmup, pace, jitter = sys.argv[1:]

def load(tool):
    path = os.path.join(work, tool, "latencies.tsv")
    if not os.path.exists(path):
        return None
    ok, mt, timeouts = [], [], 0
    for row in open(path):
        ip, t0, seen, mtime = row.split()
        if seen == "-":
            timeouts += 1
            continue
        ok.append((int(seen) - int(t0)) / 1e6)
        mt.append((int(mtime) - int(t0)) / 1e6)
    return sorted(ok), sorted(mt), timeouts

def pct(xs, p):  # nearest rank
    return xs[max(1, -(-len(xs) * p // 100)) - 1]

rows = [(f"moat {moat_version} (exec enforcer)", load("moat"))]
if backend != "-":
    rows.append((f"fail2ban {f2b_version} ({backend})", load("f2b")))
print(f"Ban latency: failure line reaching maxretry written → stamping action ran (ms); "
      f"{bans} bans per tool, one client at a time, {pace} ms apart"
      + (f" (+ random 0-{jitter} ms)" if jitter != "0" else "") + "\n")
print("| tool | bans | timeouts | p50 | p90 | p99 | max |")
print("|---|--:|--:|--:|--:|--:|--:|")
for name, (xs, _, to) in rows:
    cells = [f"{pct(xs, p):.2f}" for p in (50, 90, 99)] + [f"{xs[-1]:.2f}"] if xs else ["-"] * 4
    print(f"| {name} | {len(xs)} | {to} | " + " | ".join(cells) + " |")
if len(rows) == 2 and rows[0][1][0] and rows[1][1][0]:
    r = pct(rows[1][1][0], 50) / pct(rows[0][1][0], 50)
    print(f"\nRatio of medians, fail2ban / moat: {r:.1f}×")
print("\nMeasured by the writer: inotify creation event of the stamp file − time of the write "
      f"(time.time_ns); {warmup} uncounted warm-up bans per tool. For reference, stamp mtime − write "
      "time, p50: " + ", ".join(f"{n.split()[0]} {pct(m, 50):.2f} ms" for n, (_, m, _) in rows if m)
      + " (file mtimes come from the kernel's coarse clock, one jiffy: not used above).")
print(f"\nTotal run time {elapsed} s.")
PY
