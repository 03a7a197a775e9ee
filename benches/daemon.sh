#!/usr/bin/env bash
# Benchmark: the daemon (`moat run`) — ingest rate with 20 jails while banning, idle memory and
# CPU, and memory under a flood of a million distinct clients.
#
#   benches/daemon.sh
#
# 1. Ingest: moat-genlog writes 1,000,000 nginx lines (--seed 42, 179 MB); their dates are
#    moved to today so the live rules count them (a line older than findtime when read does
#    not count; findtime is 1d here). moat runs the 20 jails of benches/jails.sh on that file,
#    read from its start (`follow_from = "start"`), and the time from start until
#    `moat status` reports every line read is the ingest time. The jails ban as they go
#    (log enforcer; every ban is written to the SQLite ledger).
# 2. Idle: RSS of a freshly started daemon with those 20 jails on an empty file, and its CPU
#    time over IDLE_SECONDS (default 10) of doing nothing.
# 3. Flood: 1,000,000 failures from 1,000,000 distinct IPv6 clients (2001:db8::/32, one per
#    /128) into one jail (maxretry 5: nobody is banned, every client opens a window); peak RSS
#    (VmHWM) with the default cap of 50,000 clients per jail.
#
# Results go to stdout and $BENCH_DIR/daemon.md. Nothing touches the network or the firewall;
# no root needed. Environment: BENCH_DIR (default target/bench), SKIP_BUILD=1, MOAT_BIN,
# GENLOG_BIN, LINES (default 1000000), IDLE_SECONDS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
WORK=$BENCH_DIR/daemon
LINES=${LINES:-1000000}
IDLE_SECONDS=${IDLE_SECONDS:-10}
mkdir -p "$WORK"
note() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    note "cargo build --release --bins --example moat-genlog"
    (cd "$ROOT" && cargo build --release --bins --example moat-genlog)
fi
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
GENLOG=${GENLOG_BIN:-$ROOT/target/release/examples/moat-genlog}

PID=''
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

# start_daemon DIR: runs moat with DIR/moat.toml, waits until it answers; sets PID.
start_daemon() {
    rm -rf "$1/state" "$1/run"
    "$MOAT" run -c "$1/moat.toml" 2>"$1/daemon.log" &
    PID=$!
    for _ in $(seq 200); do
        "$MOAT" status -c "$1/moat.toml" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    die "moat did not start: $(tail -5 "$1/daemon.log")"
}
stop_daemon() {
    kill -TERM "$PID"
    wait "$PID" || true
    PID=''
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$PID/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
lines_read() {
    "$MOAT" status --json -c "$1/moat.toml" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(sum(f["lines"] for src in s["sources"] for f in src["files"]))'
}
now_ms() { date +%s%3N; }

# shellcheck source=benches/jails.sh
source "$ROOT/benches/jails.sh"

# ---------------------------------------------------------------------------------------------
# 1. Ingest with 20 jails
LOG=$WORK/access.log
if [[ ! -s $LOG || $(wc -l <"$LOG") != "$LINES" ]]; then
    note "generating $LINES lines (moat-genlog --seed 42), dates moved to today"
    today=$(date -u +%d/%b/%Y)
    "$GENLOG" --lines "$LINES" --seed 42 | sed "s#\[[0-9][0-9]/Mar/2026:#[$today:#" >"$LOG.tmp"
    mv "$LOG.tmp" "$LOG"
fi
cat "$LOG" >/dev/null
D=$WORK/ingest
mkdir -p "$D"
EXTRA_TOP=$(printf '[daemon]\nstate_dir = "%s/state"\nsocket = "%s/run/moat.sock"\nfollow_from = "start"' "$D" "$D") \
    FINDTIME=1d write_moat_config "$D/moat.toml" "${JAILS[@]}"
note "ingest: 20 jails, $LINES lines from the start of the file"
t0=$(now_ms)
start_daemon "$D"
while (($(lines_read "$D") < LINES)); do sleep 0.05; done
t1=$(now_ms)
ingest_ms=$((t1 - t0))
bans=$("$MOAT" bans --history 10000000 --json -c "$D/moat.toml" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["history"]))')
ingest_rss=$(hwm_kb)
stop_daemon
rate=$((LINES * 1000 / ingest_ms))

# ---------------------------------------------------------------------------------------------
# 2. Idle
D=$WORK/idle
mkdir -p "$D"
: >"$D/empty.log"
LOG_SAVED=$LOG
LOG=$D/empty.log
EXTRA_TOP=$(printf '[daemon]\nstate_dir = "%s/state"\nsocket = "%s/run/moat.sock"' "$D" "$D") \
    write_moat_config "$D/moat.toml" "${JAILS[@]}"
LOG=$LOG_SAVED
note "idle: 20 jails on an empty file for ${IDLE_SECONDS}s"
start_daemon "$D"
sleep 1
c0=$(cpu_ticks)
sleep "$IDLE_SECONDS"
c1=$(cpu_ticks)
idle_rss=$(rss_kb)
stop_daemon
hz=$(getconf CLK_TCK)
idle_cpu=$(python3 -c "print(f'{($c1 - $c0) / $hz / $IDLE_SECONDS * 100:.2f}')")

# ---------------------------------------------------------------------------------------------
# 3. Flood of distinct clients
D=$WORK/flood
mkdir -p "$D"
FLOOD=$D/flood.log
if [[ ! -s $FLOOD ]]; then
    note "generating 1,000,000 failures from distinct clients"
    python3 - "$FLOOD" <<'PY'
import sys, time
stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
with open(sys.argv[1], "w") as f:
    for n in range(1, 1_000_001):
        f.write(f'2001:db8::{n >> 16:x}:{n & 0xffff:x} - - [{stamp}] "POST /api/auth HTTP/1.1" 422 52 "-" "x"\n')
PY
fi
cat >"$D/moat.toml" <<TOML
[daemon]
state_dir = "$D/state"
socket = "$D/run/moat.sock"
follow_from = "start"

[jails.portainer]
filter = "portainer"
sources = ["$FLOOD"]
findtime = "1d"
ipv6_prefix = 128
TOML
note "flood: 1,000,000 distinct clients"
t0=$(now_ms)
start_daemon "$D"
while (($(lines_read "$D") < 1000000)); do sleep 0.05; done
flood_ms=$(($(now_ms) - t0))
flood_hwm=$(hwm_kb)
flood_rss=$(rss_kb)
stop_daemon

{
    echo "| measure | value |"
    echo "|---|---|"
    echo "| ingest, 20 jails, $LINES lines (179 MB) | $((ingest_ms)) ms = $rate lines/s; $bans bans recorded; peak RSS $((ingest_rss / 1024)) MB |"
    echo "| idle RSS, 20 jails | $((idle_rss / 1024)) MB ($idle_rss kB) |"
    echo "| idle CPU over ${IDLE_SECONDS}s | ${idle_cpu}% of one core |"
    echo "| flood, 1,000,000 distinct clients | $flood_ms ms; peak RSS $((flood_hwm / 1024)) MB, after $((flood_rss / 1024)) MB |"
    echo
    echo "moat $("$MOAT" --version | cut -d' ' -f2), $(nproc) cores, $(uname -r); command: benches/daemon.sh"
} | tee "$BENCH_DIR/daemon.md"
