#!/usr/bin/env bash
# Propagation latency in a fleet of three moat nodes sharing bans through a real redis-server:
# N bans by hand on node 1 (`moat ban`), each timed from just before the command to the moment
# its element appears in node 2's and node 3's nftables sets (seen by `nft monitor` in their
# namespaces). Prints p50 / p99 / max, and Redis's memory per active ban. Then BULK (default
# 100,000) fleet bans are written into Redis's active set as another node's, node 3 is
# restarted with an empty state directory and an empty kernel table, and the bench reports
# how long from its start until the last of them is in its nftables set (from moat's own
# debug log of its nft batches, as benches/kernel.sh does) and its RSS holding them.
#
#   sudo benches/cluster.sh [N]           (N defaults to 1000; MOAT=path/to/moat, default the
#                                          release build)
#
# WRAP="heaptrack -o /tmp/node3" (or a perf command) runs node 3's second start under it.
#
# Then, when Debian's crowdsec and crowdsec-firewall-bouncer are installed (CS_N, default 20,
# 0 to skip), the same measure for CrowdSec: its local API and its nftables bouncer (defaults:
# update_frequency 10s) in a namespace of their own, and CS_N decisions added with `cscli
# decisions add`, each timed from before that command to its element in the bouncer's set.
# That is CrowdSec's best case: its bouncers on other hosts poll the same way.
#
# Root (network namespaces), redis-server, nftables, python3. Everything it makes is under a
# temporary directory and in namespaces named moat-bench-*, removed at the end.
set -euo pipefail
N=${1:-1000}
BULK=${BULK:-100000}
MOAT=${MOAT:-$(dirname "$0")/../target/release/moat}
MOAT=$(readlink -f "$MOAT")
TMP=$(mktemp -d)
NS=(lan n1 n2 n3 cs)
MONITORS=()
cleanup() {
  # The daemons by their configuration's path, Redis by its pid (it renames itself).
  pkill -f "run -c $TMP/" 2>/dev/null || true
  [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null || true
  for p in ${CS_PIDS:-}; do kill "$p" 2>/dev/null || true; done
  for p in "${MONITORS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  for n in "${NS[@]}"; do ip netns del "moat-bench-$n" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
in_ns() { local n=$1; shift; ip netns exec "moat-bench-$n" "$@"; }
for n in "${NS[@]}"; do ip netns add "moat-bench-$n"; in_ns "$n" ip link set lo up; done
in_ns lan ip link add br0 type bridge
in_ns lan ip link set br0 up
in_ns lan ip addr add 192.0.2.5/24 dev br0
i=0
for n in n1 n2 n3; do
  i=$((i + 1))
  ip link add eth0 netns "moat-bench-$n" type veth peer name "p$i" netns moat-bench-lan
  in_ns lan ip link set "p$i" master br0
  in_ns lan ip link set "p$i" up
  in_ns "$n" ip link set eth0 up
  in_ns "$n" ip addr add "192.0.2.1$i/24" dev eth0
done
cat > "$TMP/redis.conf" <<EOF
bind 192.0.2.5
port 6379
save ""
appendonly no
dir $TMP
user default off
user moat on >bench ~moat:* +@all -@dangerous +ping +info +memory
EOF
# Not through in_ns: a function run in the background is a subshell, and its pid is not
# Redis's (the cleanup would leave Redis running).
ip netns exec moat-bench-lan redis-server "$TMP/redis.conf" > "$TMP/redis.log" 2>&1 &
REDIS_PID=$!
rcli() { in_ns lan redis-cli --no-auth-warning -h 192.0.2.5 --user moat --pass bench "$@"; }
until [ "$(rcli PING 2>/dev/null)" = PONG ]; do sleep 0.1; done
for i in 1 2 3; do
  d="$TMP/node$i"
  mkdir -p "$d"
  : > "$d/access.log"
  echo bench > "$d/redis.pass"
  chmod 600 "$d/redis.pass"
  cat > "$d/moat.toml" <<EOF
[daemon]
state_dir = "state"
socket = "moat.sock"

[enforce]
use = ["nftables"]

[jails.portainer]
filter = "portainer"
sources = ["access.log"]

[cluster]
redis = "redis://192.0.2.5:6379/0"
username = "moat"
password_file = "redis.pass"
node = "node$i"
EOF
  in_ns "n$i" "$MOAT" run -c "$d/moat.toml" 2> "$d/daemon.log" &
done
for i in 1 2 3; do
  until "$MOAT" status -c "$TMP/node$i/moat.toml" > /dev/null 2>&1; do sleep 0.1; done
done
sleep 3
MONITORS=()
for i in 2 3; do
  # In a session of its own, so that the whole pipeline is stopped at the end.
  setsid bash -c "ip netns exec moat-bench-n$i nft monitor elements 2>/dev/null | while IFS= read -r line; do
    printf '%s %s\n' \"\$(date +%s%N)\" \"\$line\"; done > '$TMP/monitor$i'" < /dev/null &
  MONITORS+=($!)
done
sleep 1
: > "$TMP/sent"
for k in $(seq 1 "$N"); do
  addr="2001:db8:77::$(printf '%x' "$k")"
  printf '%s %s\n' "$(date +%s%N)" "$addr" >> "$TMP/sent"
  "$MOAT" ban "$addr" --for 1h -c "$TMP/node1/moat.toml" > /dev/null
done
sleep 3
python3 - "$TMP" "$N" <<'EOF'
import sys, re
tmp, n = sys.argv[1], int(sys.argv[2])
sent = {}
for line in open(f"{tmp}/sent"):
    t, a = line.split()
    sent[a] = int(t)
lat = []
for node in (2, 3):
    seen = {}
    for line in open(f"{tmp}/monitor{node}"):
        t, rest = line.split(" ", 1)
        if "add element" not in rest:
            continue
        for a in re.findall(r"2001:db8:77::[0-9a-f]+", rest):
            seen.setdefault(a, int(t))
    missing = [a for a in sent if a not in seen]
    if missing:
        print(f"node{node}: {len(missing)} of {n} never seen")
    lat += [(seen[a] - sent[a]) / 1e6 for a in sent if a in seen]
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"propagation over {n} bans x 2 nodes ({len(lat)} seen): p50 {pick(0.5):.1f} ms, "
      f"p99 {pick(0.99):.1f} ms, max {lat[-1]:.1f} ms (from before `moat ban` on node 1)")
EOF
bans=$(rcli HLEN moat:bans)
used=$(rcli INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
key=$(rcli HRANDFIELD moat:bans)
entry=$(rcli MEMORY USAGE moat:bans)
echo "Redis: $bans active bans, used_memory $used bytes in all; moat:bans $entry bytes ($((entry / bans)) per ban); moat:log $(rcli MEMORY USAGE moat:log) bytes for $(rcli XLEN moat:log) entries"
echo "a ban's JSON: $(rcli HGET moat:bans "$key" | wc -c) bytes"

# The monitors are done: left running, they would stamp each of the bulk's 100,000 elements
# with a `date` process, and the kernel would build a notification for each.
for p in "${MONITORS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
MONITORS=()

# 100,000 fleet bans at a node's start: another node's (node9, not running) bans in the active
# set; node 3 starts with nothing (no state, no table) and takes them from the resync.
python3 - "$BULK" <<'PY' > "$TMP/bulk.resp"
import ipaddress, json, sys, time
n = int(sys.argv[1])
now = int(time.time() * 1000)
def resp(*args):
    out = f"*{len(args)}\r\n"
    for a in args:
        b = a.encode()
        out += f"${len(b)}\r\n{a}\r\n"
    return out
w = sys.stdout.write
for k in range(n):
    target = f"{ipaddress.ip_address(f'2001:db8:8::{k >> 16:x}:{k & 0xffff:x}')}/128"
    ban = {"node": "node9", "jail": "portainer", "target": target, "started": now,
           "until": now + 3600_000, "failures": 5, "origin": "jail", "reason": "5 failures",
           "lines": []}
    w(resp("HSET", "moat:bans", f"node9/portainer/{target}/{now}", json.dumps(ban, separators=(",", ":"))))
PY
pkill -f "run -c $TMP/node3/moat.toml" || true
while pgrep -f "run -c $TMP/node3/moat.toml" >/dev/null; do sleep 0.1; done
rm -rf "$TMP/node3/state"
in_ns n3 nft delete table inet moat 2>/dev/null || true
in_ns lan redis-cli --no-auth-warning -h 192.0.2.5 --user moat --pass bench --pipe < "$TMP/bulk.resp" > /dev/null
t0=$(date +%s%N)
in_ns n3 env MOAT_LOG=info,moat::enforce::nftables=debug ${WRAP:-} "$MOAT" run -c "$TMP/node3/moat.toml" 2> "$TMP/node3/daemon.log" &
# Sum the changes of node 3's nft batches until they hold the bulk and the N bans above.
deadline=$(($(date +%s) + 300))
python3 - "$TMP/node3/daemon.log" "$t0" "$((BULK + N))" "$deadline" <<'PY'
import datetime, re, sys, time
log, t0, bulk, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
while True:
    total, at = 0, None
    for line in open(log, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.search(r"changes=(\d+)", line)
        if m and "nft batch" in line:
            total += int(m.group(1))
            if total >= bulk and at is None:
                stamp = re.match(r"\S+", line).group(0)
                at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    if at is not None:
        print(f"{bulk} fleet bans at a node's start: in its nftables set {(at - t0 / 1e9) * 1000:.0f} ms "
              f"after `moat run` started ({total} changes in its nft batches)")
        break
    if time.time() > deadline:
        print(f"{bulk} fleet bans at a node's start: only {total} changes after 300 s")
        break
    time.sleep(0.05)
PY
sleep 5
# moat itself, not a WRAP program around it.
pid=''
for p in $(pgrep -f "run -c $TMP/node3/moat.toml"); do
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = moat ] && pid=$p
done
if [ -n "${KEEP_LOG:-}" ]; then cp "$TMP/node3/daemon.log" "$KEEP_LOG"; fi
echo "node 3 holding them: RSS $(awk '/^VmRSS/ {print $2 / 1024 " MB"}' "/proc/$pid/status"), \
$(in_ns n3 nft list set inet moat ban6 | grep -o '2001:db8:8::' | wc -l) of them in its ban6 set"
bans=$(rcli HLEN moat:bans)
echo "Redis with $bans active bans: moat:bans $(rcli MEMORY USAGE moat:bans) bytes ($(($(rcli MEMORY USAGE moat:bans) / bans)) per ban)"

# CrowdSec beside it: decision → kernel through its bouncer's polling.
CS_N=${CS_N:-20}
if [ "$CS_N" -gt 0 ] && command -v crowdsec >/dev/null && command -v crowdsec-firewall-bouncer >/dev/null; then
  CS=$TMP/crowdsec
  mkdir -p "$CS/data"
  # Debian's configuration, with this run's paths, no Central API (no network here), no
  # Prometheus, in the foreground.
  python3 - "$CS" <<'PY'
import sys
cs = sys.argv[1]
s = open("/etc/crowdsec/config.yaml").read()
for a, b in [("daemonize: true", "daemonize: false"), ("log_media: file", "log_media: stdout"),
             ("/var/lib/crowdsec/data/", cs + "/data/"), ("pid_dir: /var/run/", f"pid_dir: {cs}/"),
             ("/etc/crowdsec/local_api_credentials.yaml", cs + "/local_api_credentials.yaml"),
             ("prometheus:\n  enabled: true", "prometheus:\n  enabled: false")]:
    s = s.replace(a, b)
lines = s.split("\n")
out, skip = [], False
for l in lines:
    if l.strip().startswith("online_client:"):
        skip = True
        continue
    if skip and l.startswith("      "):
        continue
    skip = False
    out.append(l)
open(cs + "/config.yaml", "w").write("\n".join(out))
PY
  csc() { in_ns cs cscli -c "$CS/config.yaml" "$@" 2>/dev/null; }
  : > "$CS/local_api_credentials.yaml"
  csc machines add bench --auto -f "$CS/local_api_credentials.yaml" > /dev/null
  ip netns exec moat-bench-cs crowdsec -c "$CS/config.yaml" -no-cs > "$CS/lapi.log" 2>&1 &
  CS_PIDS=$!
  for _ in $(seq 50); do csc decisions list > /dev/null && break; sleep 0.1; done
  key=$(csc bouncers add bench-fw -o raw | tail -1)
  sed -e 's|${BACKEND}|nftables|' -e "s|\${API_KEY}|$key|" -e 's|daemonize: true|daemonize: false|' \
      -e 's|log_mode: file|log_mode: stdout|' -e "s|pid_dir: /var/run/|pid_dir: $CS/|" \
      /etc/crowdsec/bouncers/crowdsec-firewall-bouncer.yaml \
    | python3 -c 'import sys; print(sys.stdin.read().replace("prometheus:\n  enabled: true", "prometheus:\n  enabled: false"))' \
    > "$CS/bouncer.yaml"
  ip netns exec moat-bench-cs crowdsec-firewall-bouncer -c "$CS/bouncer.yaml" > "$CS/bouncer.log" 2>&1 &
  CS_PIDS="$CS_PIDS $!"
  for _ in $(seq 50); do in_ns cs nft list set ip crowdsec crowdsec-blacklists > /dev/null 2>&1 && break; sleep 0.1; done
  : > "$CS/lat"
  for k in $(seq "$CS_N"); do
    ip="198.51.100.$k"
    t0=$(date +%s%N)
    csc decisions add -i "$ip" -d 1h > /dev/null
    deadline=$(($(date +%s) + 60))
    while ! in_ns cs nft list set ip crowdsec crowdsec-blacklists | grep -q "$ip[ ,]"; do
      [ "$(date +%s)" -lt "$deadline" ] || { echo "crowdsec: $ip not in the bouncer's set after 60 s" >&2; exit 1; }
      sleep 0.02
    done
    echo $(( ($(date +%s%N) - t0) / 1000 )) >> "$CS/lat"
    # The next decision at a moment unrelated to the bouncer's period (0-10 s later): one
    # made just after a poll would wait the whole period every time.
    sleep "$((RANDOM % 10)).$((RANDOM % 10))"
  done
  python3 - "$CS/lat" <<'PY'
import sys
lat = sorted(int(l) / 1000 for l in open(sys.argv[1]))
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"crowdsec 1.4.6 + firewall bouncer 0.0.25 (nftables, update_frequency 10s), {len(lat)} decisions: "
      f"p50 {pick(0.5):.0f} ms, p99 {pick(0.99):.0f} ms, max {lat[-1]:.0f} ms (from before `cscli decisions add`)")
PY
fi
