#!/usr/bin/env bash
# A structured log nobody on the project wrote, held out from the miner's rules (they were written
# before this script was; 2026-12-05), for `cargo bench --bench logs` (it reads
# target/logs-bench/outside/*.csv): etcd 3.4 (Debian's etcd-server, zap's JSON lines: `{"level":
# ..., "ts": ..., "caller": "FILE:LINE", "msg": ..., fields...}`) at debug level, a cluster of three
# members on loopback under etcdctl's requests (puts, gets, deletes, transactions, leases granted
# and revoked, watches, compactions, defragmentation, snapshots, authentication with a wrong
# password, requests too large), its members killed and started again so that leaders are lost
# and elected. Each line is labelled by its `caller`: the call site that wrote it (a zap call site
# writes one message with its fields). The Content is the JSON line without `ts` and `caller`; a
# fixed-seed sample of 2,000 lines is written as Content,EventId. gRPC's messages, which reach zap
# through one wrapper call site, are left out (that call site is not an event).
# Usage: scripts/outside-logs/etcd.sh [OUT.csv] [CYCLES]
#        (default target/logs-bench/outside/etcd.csv, 6 cycles of about 20 s)
set -euo pipefail
OUT=${1:-$(dirname "$0")/../../target/logs-bench/outside/etcd.csv}
CYCLES=${2:-6}
mkdir -p "$(dirname "$OUT")"
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
CLUSTER="m1=http://127.0.0.1:42380,m2=http://127.0.0.1:42381,m3=http://127.0.0.1:42382"
EP="127.0.0.1:42379,127.0.0.1:42479,127.0.0.1:42579"
declare -A PID
start() { # member index 1..3
  local i=$1 peer=$((42379 + $1)) client=$((42279 + 100 * $1))
  etcd --name "m$i" --data-dir "$DIR/m$i" --logger=zap --log-outputs=stderr --log-level=debug \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token promote-outside \
    --snapshot-count 200 --max-request-bytes 65536 >>"$DIR/etcd.log" 2>&1 &
  PID[$i]=$!
}
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$EP" --command-timeout=3s "$@" >/dev/null 2>&1 || true; }
for i in 1 2 3; do start "$i"; done
for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$EP" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
for c in $(seq "$CYCLES"); do
  for k in $(seq 150); do ctl put "/app/k$((k % 40))" "value-$c-$k"; done
  for k in $(seq 20); do ctl get "/app/k$k"; ctl get --prefix /app --keys-only; done
  ctl del --prefix "/app/k1"
  printf 'value("/app/k2") = "value-%s-2"\n\nput /app/txn ok\n\nput /app/txn failed\n\n' "$c" | ETCDCTL_API=3 etcdctl --endpoints "$EP" txn >/dev/null 2>&1 || true
  L=$(ETCDCTL_API=3 etcdctl --endpoints "$EP" lease grant 2 2>/dev/null | awk '{print $2}') || true
  [ -n "${L:-}" ] && ctl put /app/leased x --lease="$L"
  L2=$(ETCDCTL_API=3 etcdctl --endpoints "$EP" lease grant 60 2>/dev/null | awk '{print $2}') || true
  [ -n "${L2:-}" ] && ctl lease revoke "$L2"
  (ETCDCTL_API=3 timeout 3 etcdctl --endpoints "$EP" watch --prefix /app >/dev/null 2>&1 || true) &
  REV=$(ETCDCTL_API=3 etcdctl --endpoints "$EP" endpoint status -w json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])' 2>/dev/null) || true
  [ -n "${REV:-}" ] && ctl compaction "$((REV - 10))"
  ctl compaction 1
  ctl defrag
  ctl snapshot save "$DIR/snap-$c.db" --endpoints 127.0.0.1:42379
  ctl put /app/big "$(head -c 70000 /dev/zero | tr '\0' x)"
  ctl --user root:wrong get /app/k2
  ctl alarm list
  ctl member list
  # A member killed (not the same each time), the others carry on, then it comes back.
  v=$(( (c % 3) + 1 ))
  kill -9 "${PID[$v]}" 2>/dev/null || true; wait "${PID[$v]}" 2>/dev/null || true
  for k in $(seq 30); do ctl put "/app/down$k" "x"; done
  sleep 2
  start "$v"
  sleep 4
  echo "cycle $c of $CYCLES: $(wc -l <"$DIR/etcd.log") lines" >&2
done
PYTHONPATH="$(dirname "$0")" python3 - "$DIR/etcd.log" "$OUT" <<'PY'
import json, re, sys
import sample
lines = []
for l in open(sys.argv[1], errors='replace'):
    l = l.strip()
    if not l.startswith('{'):
        continue
    try:
        caller = json.loads(l).get('caller')
    except ValueError:
        continue
    # gRPC's own messages reach zap through one wrapper (grpclog/grpclog.go): its call site is
    # not an event, so those lines, which no call site labels, are left out.
    if not caller or caller.startswith('grpclog/'):
        continue
    # The line as the program wrote it, without its time and call site.
    content = re.sub(r'"(ts|caller)":("[^"]*"|[0-9.e+-]+),', '', l)
    lines.append((content, caller))
sample.write(lines, sys.argv[2], 'call sites')
PY
