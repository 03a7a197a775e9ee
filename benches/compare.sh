#!/usr/bin/env bash
# Benchmark: moat against fail2ban-rs and fail2ban's fail2ban-regex, same input, same rules.
#
#   benches/compare.sh [--quick]
#
# What it does, in one run:
#   1. `cargo build --release --bins --example moat-genlog` (skip with SKIP_BUILD=1), then writes a deterministic nginx
#      "combined" access log with `moat-genlog --lines 1000000 --seed 42` (200,000 lines with
#      --quick): mixed traffic, ~3% failed Portainer logins (`POST /api/auth ... 422`), scanner
#      probes answered 404, IPv4 and IPv6 clients.
#   2. Scenario "1 jail": one Portainer rule (`POST /api/auth ... 422`, client address anchored
#      at the start of the line), maxretry 5, findtime 10m, bantime 1h:
#        moat            moat scan --filter portainer ... --json LOG
#        fail2ban-rs     fail2ban-rs -c CONFIG dry-run LOG          (an equivalent TOML jail)
#        fail2ban-regex  fail2ban-regex LOG /abs/path/filter.conf   (an equivalent failregex;
#                        it only matches, it does not simulate bans)
#   3. Scenario "20 jails": 20 jails with distinct rules reading the same log, run in one pass
#      by moat (`moat scan -c CONFIG`) and by fail2ban-rs (its dry run streams the file once
#      through every enabled jail). fail2ban-regex takes one filter, not jails: it gets one
#      filter holding the 20 failregexes, which it checks all of on every line (a lower bound
#      for 20 fail2ban jails: the date is parsed once per line instead of once per jail, and
#      nothing counts failures or bans).
#   4. Prints a table (seconds, lines/s, peak RSS, matches and bans each tool reported, so the
#      reader sees they did the same work) and the ratios, and writes it as markdown to
#      $BENCH_DIR/results.md.
#
# Timing: wall clock of the whole process (bash's EPOCHREALTIME around the command, millisecond
# resolution; GNU time's %e only has 10 ms), peak RSS from GNU `/usr/bin/time -f '%e %M'`.
# moat and fail2ban-rs: best of RUNS runs (default 3), RSS the highest of those runs;
# fail2ban-regex: F2B_REGEX_RUNS runs (default 1: about 25 s per million lines). The log is
# read once beforehand so every tool reads it from the page cache. Nothing touches the
# network or the firewall, and nothing needs root.
#
# Semantics are aligned as far as the tools allow: every rule is the same regex, except for the
# date field (moat: `\[(?P<time>[^\]]+)\]` as in its built-in filters, fail2ban-rs: `\[[^\]]+\]`,
# fail2ban: `\[\]` because it cuts the date out of the line before matching); moat counts IPv6
# clients per address (--ipv6-prefix 128, as the others do; its default is per /64). Bans are
# not the same measure everywhere: moat reports ban events (a client can be banned again after
# its ban ends) and we also count the distinct clients banned; fail2ban-rs's dry run reports
# the clients that would be banned at least once; fail2ban-regex reports no bans at all.
#
# Environment:
#   BENCH_DIR       where the log, configs, outputs and results.md go (default target/bench;
#                   work files in $BENCH_DIR/compare/)
#   RUNS            runs per fast tool, best kept (default 3)
#   F2B_REGEX_RUNS  runs of fail2ban-regex (default 1)
#   SKIP_BUILD=1    do not run cargo build
#   MOAT_BIN, GENLOG_BIN  binaries to use (default target/release/moat, target/release/examples/moat-genlog)
#   FAIL2BAN_RS     fail2ban-rs binary (default: `fail2ban-rs` on PATH, else one installed
#                   earlier by this script, else `cargo install fail2ban-rs --locked --root
#                   $BENCH_DIR/f2brs`, about 2 minutes; with cargo build, the only steps that
#                   may use the network)
#   FAIL2BAN_REGEX  fail2ban-regex binary (default: on PATH; skipped with a note if absent)
#   SKIP_F2B_REGEX=1  leave fail2ban-regex out (it is the slow part: about 70 s of the run)
#   F2B_DEFAULT_DATES=1  also run fail2ban-regex on the 1-jail filter without its datepattern,
#                   as the filter is usually copied: fail2ban then tries every default date
#                   template on every line (several minutes per million lines)

set -euo pipefail
export LC_ALL=C # decimal points, not commas, in EPOCHREALTIME and printf

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument $arg" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

LINES=1000000
((QUICK)) && LINES=200000
SEED=42
RUNS=${RUNS:-3}
F2B_REGEX_RUNS=${F2B_REGEX_RUNS:-1}

# Absolute paths throughout: fail2ban-regex takes a relative filter path for a regex.
mkdir -p "${BENCH_DIR:=target/bench}"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
WORK=$BENCH_DIR/compare
mkdir -p "$WORK"
LOG=$WORK/access-$LINES.log

note() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

for tool in /usr/bin/time python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# ---------------------------------------------------------------------------------------------
# Binaries

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    note "cargo build --release --bins --example moat-genlog"
    cargo build --release --bins --example moat-genlog
fi
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
GENLOG=${GENLOG_BIN:-$ROOT/target/release/examples/moat-genlog}
[[ -x $MOAT ]] || die "no moat binary at $MOAT"
[[ -x $GENLOG ]] || die "no moat-genlog binary at $GENLOG"

if [[ -n ${FAIL2BAN_RS:-} ]]; then
    F2BRS=$FAIL2BAN_RS
elif command -v fail2ban-rs >/dev/null; then
    F2BRS=$(command -v fail2ban-rs)
elif [[ -x $BENCH_DIR/f2brs/bin/fail2ban-rs ]]; then
    F2BRS=$BENCH_DIR/f2brs/bin/fail2ban-rs
else
    note "fail2ban-rs not found: cargo install fail2ban-rs --locked --root $BENCH_DIR/f2brs"
    cargo install fail2ban-rs --locked --root "$BENCH_DIR/f2brs"
    F2BRS=$BENCH_DIR/f2brs/bin/fail2ban-rs
fi
[[ -x $F2BRS ]] || die "fail2ban-rs at $F2BRS is not executable"

if [[ ${SKIP_F2B_REGEX:-0} == 1 ]]; then
    F2BREGEX=''
    note "SKIP_F2B_REGEX=1: fail2ban-regex rows are skipped"
else
    F2BREGEX=${FAIL2BAN_REGEX:-$(command -v fail2ban-regex || true)}
    [[ -z $F2BREGEX ]] && note "fail2ban-regex not found: its rows are skipped"
fi

V_MOAT=$("$MOAT" --version)
V_F2BRS=$("$F2BRS" --version)
V_F2BREGEX=${F2BREGEX:+$("$F2BREGEX" --version 2>&1 | head -n1)}

# ---------------------------------------------------------------------------------------------
# Input

note "generating $LINES lines: moat-genlog --lines $LINES --seed $SEED"
"$GENLOG" --lines "$LINES" --seed "$SEED" >"$LOG.tmp"
mv "$LOG.tmp" "$LOG"
cat "$LOG" >/dev/null # into the page cache for everyone

# The 20 jails' rules (JAILS) and moat's dialect of them: shared with benches/daemon.sh.
# shellcheck source=benches/jails.sh
source "$ROOT/benches/jails.sh"

# The same rule in each tool's dialect.
f2brs_re() { printf '%s' '^<HOST> \S+ \S+ \[[^\]]+\] '"$1"; }


# fail2ban-rs: [global] is required (the dry run never uses its paths); log_path is required
# but the dry run reads the file given on its command line. ignoreself = false: moat does not
# exempt the machine's own addresses either. Each config sits alone in its own directory
# because fail2ban-rs also merges a config.d/ found next to it.
write_f2brs_config() { # FILE JAIL...
    local file=$1 j
    shift
    mkdir -p "$(dirname "$file")"
    {
        echo '[global]'
        printf 'state_dir = "%s"\n' "$WORK/f2brs-state"
        printf 'socket_path = "%s"\n' "$WORK/f2brs-state/fail2ban-rs.sock"
        for j in "$@"; do
            printf '\n[jail.%s]\n' "${j%%|*}"
            printf 'log_path = "%s"\n' "$LOG"
            echo 'date_format = "common"'
            printf "filter = ['%s']\n" "$(f2brs_re "${j#*|}")"
            echo 'max_retry = 5'
            echo 'find_time = "10m"'
            echo 'ban_time = "1h"'
            echo 'ignoreself = false'
        done
    } >"$file"
}


write_moat_config "$WORK/moat-20.toml" "${JAILS[@]}"
write_f2brs_config "$WORK/f2brs-1/config.toml" "${JAILS[0]}"
write_f2brs_config "$WORK/f2brs-20/config.toml" "${JAILS[@]}"
write_f2b_filter "$WORK/f2b-portainer.conf" "${JAILS[0]}"
write_f2b_filter "$WORK/f2b-20.conf" "${JAILS[@]}"

"$MOAT" check-config -c "$WORK/moat-20.toml" >/dev/null

# ---------------------------------------------------------------------------------------------
# Measuring

# measure RUNS OUT CMD...: runs CMD RUNS times, stdout to OUT, stderr to OUT.err; sets SECS
# (best wall time) and RSS_KB (highest peak resident set size).
measure() {
    local runs=$1 out=$2 i t0 t1 secs rss
    shift 2
    SECS='' RSS_KB=0
    for ((i = 1; i <= runs; i++)); do
        t0=$EPOCHREALTIME
        if ! /usr/bin/time -f '%e %M' -o "$out.time" "$@" >"$out" 2>"$out.err"; then
            cat "$out.err" >&2
            die "failed: $*"
        fi
        t1=$EPOCHREALTIME
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        read -r _ rss <"$out.time"
        printf '    run %d: %6.3f s  %7.1f MB\n' "$i" "$secs" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" >&2
        if [[ -z $SECS ]] || awk -v a="$secs" -v b="$SECS" 'BEGIN { exit !(a < b) }'; then
            SECS=$secs
        fi
        if ((rss > RSS_KB)); then RSS_KB=$rss; fi
    done
}

# Counts each tool reported: sets MATCHES and BANS (a display string).
count_moat() { # JSON
    local out
    out=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
matches = sum(j["matched"] for j in r["jails"])
events = sum(j["bans"] for j in r["jails"])
if events != len(r["bans"]):
    sys.exit("the JSON report lists fewer bans than it counts")
clients = len({(b["jail"], b["target"]) for b in r["bans"]})
print(matches, clients, events)' "$1")
    local clients events
    read -r MATCHES clients events <<<"$out"
    BANS="$clients clients ($events bans)"
}
count_f2brs() { # OUTPUT
    MATCHES=$(awk '/^  Matches:/ { n += $2 } END { print n + 0 }' "$1")
    BANS="$(awk '/^  Would ban:/ { n += $3 } END { print n + 0 }' "$1") clients"
}
count_f2bregex() { # OUTPUT
    MATCHES=$(awk '/^Failregex: [0-9]+ total/ { print $2 }' "$1")
    BANS="n/a (matches only)"
}
# Per-jail match counts, NAME COUNT lines, for the consistency check.
per_jail_moat() { python3 -c 'import json,sys
for j in json.load(open(sys.argv[1]))["jails"]: print(j["name"], j["matched"])' "$1"; }
per_jail_f2brs() { awk '/^Jail: / { j = $2 } /^  Matches:/ { print j, $2 }' "$1"; }
per_jail_f2bregex() { # OUTPUT JAIL...: regexes are numbered in jail order; absent = 0 hits
    local out=$1 i=1 j
    shift
    for j in "$@"; do
        printf '%s %s\n' "${j%%|*}" "$(awk -v i="$i" '$2 == i ")" { gsub(/[][]/, "", $3); print $3; f = 1 } END { if (!f) print 0 }' "$out")"
        i=$((i + 1))
    done
}

ROWS=() # tool|scenario|seconds|rss_kb|matches|bans
record() { ROWS+=("$1|$2|$SECS|$RSS_KB|$MATCHES|$BANS"); }

# ---------------------------------------------------------------------------------------------
# Scenario 1: one Portainer jail

S1="1 jail"
note "$S1: moat (best of $RUNS)"
measure "$RUNS" "$WORK/moat-1.json" "$MOAT" scan --filter portainer --maxretry 5 --findtime 10m \
    --bantime 1h --ipv6-prefix 128 --no-progress --json "$LOG"
count_moat "$WORK/moat-1.json"
record moat "$S1"

note "$S1: fail2ban-rs dry-run (best of $RUNS)"
measure "$RUNS" "$WORK/f2brs-1.out" "$F2BRS" -c "$WORK/f2brs-1/config.toml" dry-run "$LOG"
count_f2brs "$WORK/f2brs-1.out"
record fail2ban-rs "$S1"

if [[ -n $F2BREGEX ]]; then
    note "$S1: fail2ban-regex ($F2B_REGEX_RUNS run(s), slow)"
    measure "$F2B_REGEX_RUNS" "$WORK/f2bregex-1.out" "$F2BREGEX" --print-no-missed \
        "$LOG" "$WORK/f2b-portainer.conf"
    count_f2bregex "$WORK/f2bregex-1.out"
    record fail2ban-regex "$S1"
    if [[ ${F2B_DEFAULT_DATES:-0} == 1 ]]; then
        # The filter as people copy it (the Portainer write-up has no datepattern): fail2ban
        # then tries its default date templates on every line.
        grep -v '^datepattern' "$WORK/f2b-portainer.conf" >"$WORK/f2b-portainer-default-dates.conf"
        note "$S1: fail2ban-regex with default date detection ($F2B_REGEX_RUNS run(s), slowest)"
        measure "$F2B_REGEX_RUNS" "$WORK/f2bregex-1d.out" "$F2BREGEX" --print-no-missed \
            "$LOG" "$WORK/f2b-portainer-default-dates.conf"
        count_f2bregex "$WORK/f2bregex-1d.out"
        record "fail2ban-regex (default date detection)" "$S1"
    fi
fi

# ---------------------------------------------------------------------------------------------
# Scenario 2: 20 jails on the same log

S20="20 jails"
note "$S20: moat (best of $RUNS)"
measure "$RUNS" "$WORK/moat-20.json" "$MOAT" scan -c "$WORK/moat-20.toml" --no-progress --json
count_moat "$WORK/moat-20.json"
record moat "$S20"

note "$S20: fail2ban-rs dry-run, all 20 jails in one pass (best of $RUNS)"
measure "$RUNS" "$WORK/f2brs-20.out" "$F2BRS" -c "$WORK/f2brs-20/config.toml" dry-run "$LOG"
count_f2brs "$WORK/f2brs-20.out"
record fail2ban-rs "$S20"

if [[ -n $F2BREGEX ]]; then
    note "$S20: fail2ban-regex, one filter with the 20 failregexes ($F2B_REGEX_RUNS run(s), slow)"
    measure "$F2B_REGEX_RUNS" "$WORK/f2bregex-20.out" "$F2BREGEX" --print-no-missed \
        "$LOG" "$WORK/f2b-20.conf"
    count_f2bregex "$WORK/f2bregex-20.out"
    record "fail2ban-regex (1 filter, 20 regexes)" "$S20"
fi

# ---------------------------------------------------------------------------------------------
# Did they do the same work? Per-jail match counts must agree.

CHECKS=()
per_jail_moat "$WORK/moat-20.json" | sort >"$WORK/jails-moat.txt"
per_jail_f2brs "$WORK/f2brs-20.out" | sort >"$WORK/jails-f2brs.txt"
if [[ -n $F2BREGEX ]]; then
    per_jail_f2bregex "$WORK/f2bregex-20.out" "${JAILS[@]}" | sort >"$WORK/jails-f2bregex.txt"
else
    awk '{ print $1, "n/a" }' "$WORK/jails-moat.txt" >"$WORK/jails-f2bregex.txt"
fi
if cmp -s "$WORK/jails-moat.txt" "$WORK/jails-f2brs.txt" &&
    { [[ -z $F2BREGEX ]] || cmp -s "$WORK/jails-moat.txt" "$WORK/jails-f2bregex.txt"; }; then
    CHECKS+=("OK: per-jail match counts agree between the tools (20-jail run)")
else
    CHECKS+=("WARNING: per-jail match counts differ, see $WORK/jails-*.txt")
fi
s1=() s20=()
for row in "${ROWS[@]}"; do
    IFS='|' read -r _ scen _ _ m _ <<<"$row"
    if [[ $scen == "$S1" ]]; then s1+=("$m"); else s20+=("$m"); fi
done
for list in "${s1[*]}" "${s20[*]}"; do
    read -ra ms <<<"$list"
    [[ $(printf '%s\n' "${ms[@]}" | sort -u | wc -l) == 1 ]] ||
        CHECKS+=("WARNING: total matches differ within a scenario: ${ms[*]}")
done
# Clients banned: moat's distinct banned clients vs fail2ban-rs's "would ban".
moat_cl() { python3 -c 'import json,sys; print(len({(b["jail"],b["target"]) for b in json.load(open(sys.argv[1]))["bans"]}))' "$1"; }
f2brs_cl() { awk '/^  Would ban:/ { n += $3 } END { print n + 0 }' "$1"; }
for s in 1 20; do
    a=$(moat_cl "$WORK/moat-$s.json") b=$(f2brs_cl "$WORK/f2brs-$s.out")
    if [[ $a == "$b" ]]; then
        CHECKS+=("OK: moat and fail2ban-rs ban the same number of clients with $s jail(s): $a")
    else
        CHECKS+=("WARNING: clients banned differ with $s jail(s): moat $a, fail2ban-rs $b")
    fi
done

# ---------------------------------------------------------------------------------------------
# Report

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
per_s() { awk -v n="$LINES" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# verdict RATIO MORE LESS: "moat 3.1x faster" or "moat 2.0x slower" from theirs/moat.
verdict() {
    awk -v r="$1" -v more="$2" -v less="$3" 'BEGIN {
        if (r == "n/a") print "n/a"
        else if (r >= 1) printf "moat %.1fx %s\n", r, more
        else printf "moat %.1fx %s\n", 1 / r, less }'
}
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

# Rows of the main table: tool, scenario, lines, s, lines/s, MB, matches, bans.
table_rows=()
for row in "${ROWS[@]}"; do
    IFS='|' read -r tool scen secs rss m b <<<"$row"
    table_rows+=("$tool|$scen|$(group "$LINES")|$secs|$(group "$(per_s "$secs")")|$(mb "$rss")|$(group "$m")|$b")
done

# Ratios: for each scenario, how many times faster moat is, and how much less memory it uses.
ratio_rows=()
for scen in "$S1" "$S20"; do
    m_secs='' m_rss=''
    for row in "${ROWS[@]}"; do
        IFS='|' read -r tool s secs rss _ _ <<<"$row"
        [[ $s == "$scen" && $tool == moat ]] && m_secs=$secs m_rss=$rss
    done
    for row in "${ROWS[@]}"; do
        IFS='|' read -r tool s secs rss _ _ <<<"$row"
        [[ $s == "$scen" && $tool != moat ]] || continue
        t=$(ratio "$secs" "$m_secs") r=$(ratio "$rss" "$m_rss")
        ratio_rows+=("moat vs $tool|$scen|$t|$(verdict "$t" faster slower)|$r|$(verdict "$r" "less memory" "more memory")")
    done
done

H_MAIN='tool|scenario|lines|seconds|lines/s|peak RSS MB|matches|bans reported'
H_RATIO='comparison|scenario|time theirs/moat|speed|peak RSS theirs/moat|memory'

print_table() { # HEADER ROW...: aligned columns on stdout
    printf '%s\n' "$@" | column -t -s '|'
}
echo
echo "Input: $LINES lines (moat-genlog --seed $SEED), $(du -h "$LOG" | cut -f1); best of $RUNS runs (fail2ban-regex: $F2B_REGEX_RUNS)"
echo
print_table "$H_MAIN" "${table_rows[@]}"
echo
print_table "$H_RATIO" "${ratio_rows[@]}"
echo
printf '%s\n' "${CHECKS[@]}"

md_table() { # HEADER ROW...
    local h=$1 cols
    shift
    printf '| %s |\n' "${h//|/ | }"
    cols=$(awk -F'|' '{ print NF }' <<<"$h")
    printf '|'; for ((i = 0; i < cols; i++)); do printf -- '---|'; done; echo
    for r in "$@"; do printf '| %s |\n' "${r//|/ | }"; done
}

{
    echo "# moat vs fail2ban-rs vs fail2ban-regex"
    echo
    echo "Generated by \`benches/compare.sh$( ((QUICK)) && echo ' --quick')\` on $(date -u '+%Y-%m-%d %H:%M UTC'):"
    echo "$(nproc) CPU(s), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo 'unknown CPU')."
    echo "Tools: $V_MOAT; $V_F2BRS${V_F2BREGEX:+; $V_F2BREGEX}."
    echo
    echo "Input: an nginx combined access log, $(group "$LINES") lines (\`moat-genlog --lines $LINES --seed $SEED\`)."
    echo "Rules: maxretry 5, findtime 10m, bantime 1h; the same regexes in every tool."
    echo "Time: wall clock, best of $RUNS runs (fail2ban-regex: $F2B_REGEX_RUNS); peak RSS: GNU time's %M, highest run."
    echo
    md_table "$H_MAIN" "${table_rows[@]}"
    echo
    md_table "$H_RATIO" "${ratio_rows[@]}"
    echo
    printf -- '- %s\n' "${CHECKS[@]}"
    echo
    echo "Notes:"
    echo
    echo "- moat: \`moat scan --filter portainer --ipv6-prefix 128 ...\` and \`moat scan -c moat-20.toml\`;"
    echo "  bans are ban events (a client banned again after its ban ended counts again) and the distinct clients banned."
    echo "- fail2ban-rs: \`fail2ban-rs -c config.toml dry-run LOG\`: one pass over the file with every enabled jail;"
    echo "  \"would ban\" counts clients that reached maxretry within findtime at least once (no ban expiry is simulated)."
    echo "- fail2ban-regex: matches only, no bans. In the 20-jail scenario it runs one filter holding the 20 failregexes"
    echo "  and checks every one on every line; the date is parsed once per line rather than once per jail, so this is a"
    echo "  lower bound for 20 fail2ban jails."
    echo
    echo "## Matches per jail (20-jail run)"
    echo
    md_table "jail|moat|fail2ban-rs|fail2ban-regex" \
        $(join "$WORK/jails-moat.txt" "$WORK/jails-f2brs.txt" | join - "$WORK/jails-f2bregex.txt" | tr ' ' '|')
} >"$BENCH_DIR/results.md"
echo
echo "Markdown: $BENCH_DIR/results.md; outputs and configs: $WORK/"
