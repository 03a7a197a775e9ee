#!/usr/bin/env bash
# Benchmark: fail2ban's own filters, read unchanged, in moat and in fail2ban-regex.
#
#   benches/fail2ban.sh [--quick]
#
# What it does, in one run:
#   1. `cargo build --release --bins --example moat-genlog` (skip with SKIP_BUILD=1), then
#      writes two deterministic logs with moat-genlog (1,000,000 lines each; 200,000 with --quick): an nginx "combined"
#      access log (`--seed 42`: scanners probing /wp-login.php, /.env, ... answered 404) and an
#      OpenSSH auth.log (`--format sshd --seed 42`: a quarter failures from guessing bots).
#   2. For each pair (access log, nginx-botsearch) and (auth.log, sshd), with the same filter
#      file, /etc/fail2ban/filter.d/NAME.conf:
#        moat --fail2ban-filter   moat scan --fail2ban-filter FILE --timezone UTC --json LOG
#        moat --json-lines        the same, one line per failure (fail2ban-regex's job)
#        moat built-in            moat scan --filter NAME --timezone UTC --json LOG (moat's own
#                                 filter of the same name, for comparison)
#        fail2ban-regex           fail2ban-regex --print-no-missed LOG FILE
#   3. Prints a table (seconds, lines/s, peak RSS, failures found) and the ratios, and writes
#      it as markdown to $BENCH_DIR/fail2ban.md.
#
# Timing: wall clock of the whole process (bash's EPOCHREALTIME), peak RSS from GNU
# `/usr/bin/time -f '%e %M'`; moat: best of RUNS runs (default 3); fail2ban-regex:
# F2B_REGEX_RUNS runs (default 1; it is the slow part). The logs are read once beforehand so
# every tool reads them from the page cache. Nothing touches the network or the firewall.
#
# What is counted: moat's failures are the lines its filter turned into a failure (the JSON
# report's `matched`, and the number of --json-lines objects); fail2ban-regex's are the
# lines its failregexes matched ("Lines: ... matched"), which for sshd also counts lines that
# only carry a connection's address for later (<F-NOFAIL>), so it is higher there.
#
# Environment: BENCH_DIR (default target/bench), RUNS, F2B_REGEX_RUNS, SKIP_BUILD=1,
# MOAT_BIN, GENLOG_BIN, FAIL2BAN_REGEX (default: on PATH), FAIL2BAN_DIR (/etc/fail2ban).

set -euo pipefail
export LC_ALL=C

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fail2ban.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LINES=1000000
((QUICK)) && LINES=200000
RUNS=${RUNS:-3}
F2B_REGEX_RUNS=${F2B_REGEX_RUNS:-1}
F2BDIR=${FAIL2BAN_DIR:-/etc/fail2ban}
mkdir -p "${BENCH_DIR:=target/bench}"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
WORK=$BENCH_DIR/fail2ban
mkdir -p "$WORK"

note() { printf '==> %s\n' "$*" >&2; }
die() { printf 'fail2ban.sh: %s\n' "$*" >&2; exit 1; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    note "cargo build --release --bins --example moat-genlog"
    cargo build --release --bins --example moat-genlog
fi
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
GENLOG=${GENLOG_BIN:-$ROOT/target/release/examples/moat-genlog}
F2BREGEX=${FAIL2BAN_REGEX:-$(command -v fail2ban-regex || true)}
[[ -x $MOAT && -x $GENLOG ]] || die "no release binaries ($MOAT, $GENLOG)"
[[ -n $F2BREGEX ]] || die "fail2ban-regex not found (apt-get install fail2ban)"
for f in sshd nginx-botsearch; do
    [[ -f $F2BDIR/filter.d/$f.conf ]] || die "no $F2BDIR/filter.d/$f.conf"
done

note "generating $LINES lines of each log with moat-genlog --seed 42"
"$GENLOG" --lines "$LINES" --seed 42 >"$WORK/access.log"
"$GENLOG" --format sshd --lines "$LINES" --seed 42 >"$WORK/auth.log"
cat "$WORK/access.log" "$WORK/auth.log" >/dev/null

# measure RUNS OUT CMD...: best wall time in SECS, highest peak RSS in RSS_KB.
measure() {
    local runs=$1 out=$2 i t0 t1 secs rss
    shift 2
    SECS='' RSS_KB=0
    for ((i = 1; i <= runs; i++)); do
        t0=$EPOCHREALTIME
        /usr/bin/time -f '%e %M' -o "$out.time" "$@" >"$out" 2>"$out.err" || { cat "$out.err" >&2; die "failed: $*"; }
        t1=$EPOCHREALTIME
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        read -r _ rss <"$out.time"
        printf '    run %d: %7.3f s  %7.1f MB\n' "$i" "$secs" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" >&2
        if [[ -z $SECS ]] || awk -v a="$secs" -v b="$SECS" 'BEGIN { exit !(a < b) }'; then SECS=$secs; fi
        if ((rss > RSS_KB)); then RSS_KB=$rss; fi
    done
}
matched_json() { python3 -c 'import json,sys; print(sum(j["matched"] for j in json.load(open(sys.argv[1]))["jails"]))' "$1"; }
matched_f2b() { awk '/^Lines: / { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^matched/) print $i }' "$1" | tr -d ','; }

ROWS=() # log|tool|secs|rss|failures
row() { ROWS+=("$1|$2|$SECS|$RSS_KB|$3"); }

for pair in "access.log|nginx-botsearch" "auth.log|sshd"; do
    log=$WORK/${pair%%|*} name=${pair#*|} file=$F2BDIR/filter.d/${pair#*|}.conf
    note "$name: moat scan --fail2ban-filter (best of $RUNS)"
    measure "$RUNS" "$WORK/$name-moat.json" "$MOAT" scan --fail2ban-filter "$file" --timezone UTC --no-progress --json "$log"
    row "$name" "moat --fail2ban-filter" "$(matched_json "$WORK/$name-moat.json")"
    note "$name: moat scan --fail2ban-filter --json-lines (best of $RUNS)"
    measure "$RUNS" "$WORK/$name-moat.jsonl" "$MOAT" scan --fail2ban-filter "$file" --timezone UTC --json-lines "$log"
    row "$name" "moat --fail2ban-filter --json-lines" "$(wc -l <"$WORK/$name-moat.jsonl")"
    note "$name: moat's built-in filter (best of $RUNS)"
    measure "$RUNS" "$WORK/$name-builtin.json" "$MOAT" scan --filter "$name" --timezone UTC --no-progress --json "$log"
    row "$name" "moat built-in --filter $name" "$(matched_json "$WORK/$name-builtin.json")"
    note "$name: fail2ban-regex ($F2B_REGEX_RUNS run(s), slow)"
    measure "$F2B_REGEX_RUNS" "$WORK/$name-f2bregex.out" "$F2BREGEX" --print-no-missed "$log" "$file"
    row "$name" "fail2ban-regex" "$(matched_f2b "$WORK/$name-f2bregex.out")"
done

{
    echo "| filter | tool | seconds | lines/s | peak RSS | failures | vs fail2ban-regex |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r name tool secs rss fails <<<"$r"
        base=''
        for b in "${ROWS[@]}"; do
            IFS='|' read -r bn bt bs _ _ <<<"$b"
            [[ $bn == "$name" && $bt == fail2ban-regex ]] && base=$bs
        done
        printf '| %s | %s | %.3f | %s | %.0f MB | %s | %s |\n' "$name" "$tool" "$secs" \
            "$(awk -v l="$LINES" -v s="$secs" 'BEGIN { printf "%\047d", l / s }')" \
            "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$fails" \
            "$(awk -v b="$base" -v s="$secs" 'BEGIN { printf "%.0fx", b / s }')"
    done
    echo
    echo "$LINES lines per log; $("$MOAT" --version); $("$F2BREGEX" --version 2>&1 | head -n1);"
    echo "$(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))."
} | tee "$BENCH_DIR/fail2ban.md"
