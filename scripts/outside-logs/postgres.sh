#!/usr/bin/env bash
# A log nobody on the project wrote, labelled by its program's own message formats, for the
# miner's grouping accuracy outside LogHub (`cargo bench --bench logs` reads
# target/logs-bench/outside/*.csv). A throwaway PostgreSQL 15 server (Debian's postgresql-15, run
# as the postgres user) logs connections, lock waits, checkpoints and autovacuum under pgbench's
# own workloads (read-write, select-only, no-update) and a few refused connections; each message
# is labelled by the format string (msgid) of PostgreSQL's message catalogues it matches, the
# longest literal first. Statement echoes (`duration: ... statement: <SQL>`, `STATEMENT:`) are left
# out: their variable is SQL, not a value. A fixed-seed sample of 2,000 messages is written as
# Content,EventId.
#
# With `json`, the server writes its `jsonlog` instead (one JSON object a line: timestamp, user,
# database, pid, session, severity, message, detail, context, backend type, ...), held out from
# the miner's rules (they were written before this mode was): the Content is the whole line, and
# each is labelled by its message's format string and the names of its fields (OUT.csv), and by
# the format string alone (OUT-message.csv); a line's fields depend on its call site and on what
# it reports (a detail, a session), as in the registry's log.
# Usage: scripts/outside-logs/postgres.sh [OUT.csv] [json]
#        (default target/logs-bench/outside/postgresql.csv, or postgresql-json.csv with json)
set -euo pipefail
B=/usr/lib/postgresql/15/bin
MODE=${2:-stderr}
DEFAULT=postgresql.csv
[ "$MODE" = json ] && DEFAULT=postgresql-json.csv
OUT=${1:-$(dirname "$0")/../../target/logs-bench/outside/$DEFAULT}
mkdir -p "$(dirname "$OUT")"
DIR=$(mktemp -d)
chown postgres "$DIR"
runuser -u postgres -- $B/initdb -D "$DIR/data" -U postgres >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
port = 54329
listen_addresses = ''
unix_socket_directories = '$DIR'
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = on
log_disconnections = on
log_checkpoints = on
log_min_duration_statement = 0
log_autovacuum_min_duration = 0
log_lock_waits = on
deadlock_timeout = 10ms
log_temp_files = 0
lc_messages = 'C'
autovacuum_naptime = 1s
checkpoint_timeout = 30s
CONF
if [ "$MODE" = json ]; then
  cat >>"$DIR/data/postgresql.conf" <<CONF
log_destination = 'jsonlog'
logging_collector = on
log_directory = '$DIR/log'
log_filename = 'server.log'
CONF
fi
runuser -u postgres -- $B/pg_ctl -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
export PGHOST=$DIR PGPORT=54329 PGUSER=postgres
trap 'runuser -u postgres -- $B/pg_ctl -D "$DIR/data" -w stop >/dev/null 2>&1 || true' EXIT
$B/createdb bench
$B/pgbench -i -s 2 bench >/dev/null 2>&1
for _ in 1 2 3; do
  $B/psql -d nosuchdb -c 'select 1' >/dev/null 2>&1 || true
  $B/psql -U nosuchrole -d bench -c 'select 1' >/dev/null 2>&1 || true
done
$B/pgbench -c 8 -j 2 -T 30 -n bench >/dev/null 2>&1 &
$B/pgbench -c 4 -j 1 -T 30 -n -S bench >/dev/null 2>&1 &
$B/pgbench -c 4 -j 1 -T 30 -n -N bench >/dev/null 2>&1 &
wait
$B/pgbench -i -s 1 bench >/dev/null 2>&1
$B/psql -d bench -c checkpoint >/dev/null
LOG=$DIR/server.log
[ "$MODE" = json ] && LOG=$DIR/log/server.json
python3 - "$LOG" "$OUT" "$MODE" <<'PY'
import csv, glob, gettext, random, re, sys
ids = set()
for f in glob.glob('/usr/share/locale/*/LC_MESSAGES/postgres-15.mo'):
    for k in gettext.GNUTranslations(open(f, 'rb'))._catalog:
        ids.add(k if isinstance(k, str) else k[0])
spec = re.compile(r'%(?:\d+\$)?[-+ #0]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|h|ll|l|z|j|t|L)?[diouxXeEfgGcsp]|%m|%%')
pats = []
for m in ids:
    parts, specs = spec.split(m), spec.findall(m)
    rx = ''.join(re.escape(p) + (('%' if specs[k] == '%%' else '(.*?)') if k < len(specs) else '') for k, p in enumerate(parts))
    lit = sum(len(p) for p in parts)
    if lit >= 4:
        pats.append((lit, m, re.compile('^' + rx + '$', re.S)))
pats.sort(key=lambda x: -x[0])
json_mode = sys.argv[3] == 'json'
if json_mode:
    import json
    entries = []
    for l in open(sys.argv[1], encoding='utf-8', errors='replace'):
        o = json.loads(l)
        if not o.get('message', '').startswith('duration:'):
            entries.append((l.rstrip('\n'), o['message'], ' '.join(sorted(k for k in o if k != 'message'))))
else:
    line = re.compile(r'^\S+ \S+ \S+ \[\d+\] (?:\S+@\S+ )?([A-Z]+):  (.*)$')
    entries = [m.groups() for m in (line.match(l.rstrip('\n')) for l in open(sys.argv[1], encoding='utf-8', errors='replace')) if m]
    entries = [(msg, msg, '') for level, msg in entries if not (msg.startswith('duration:') or level == 'STATEMENT')]
cache = {}
def label(msg):
    key = re.sub(r'\d+', '0', msg)
    if key not in cache:
        cache[key] = next((mid for _, mid, rx in pats if rx.match(msg)), None)
    return cache[key]
random.seed(1)
sample = [e for e in random.sample(entries, min(2000, len(entries))) if label(e[1])]
outs = [(sys.argv[2], lambda e: label(e[1]) + (' | ' + e[2] if json_mode else ''))]
if json_mode:
    outs.append((sys.argv[2].replace('.csv', '-message.csv'), lambda e: label(e[1])))
for path, event in outs:
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['Content', 'EventId'])
        for e in sample:
            w.writerow([e[0], event(e)])
PY
echo "wrote $OUT"
