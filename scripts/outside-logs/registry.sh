#!/usr/bin/env bash
# A second log nobody on the project wrote, for the miner's grouping accuracy outside LogHub
# (`cargo bench --bench logs` reads target/logs-bench/outside/*.csv): a throwaway OCI registry
# (Debian's docker-registry, the CNCF distribution server) at debug level, driven through its
# HTTP API by a client that pushes and pulls images of a few repositories, asks for manifests and
# blobs that are not there, sends bad digests, lists tags and deletes manifests, in a fixed-seed
# random order. Every line is the registry's own: logrus lines (`msg=... key=value ...`, the
# Content is the line after its time and level) and its access log (Apache's combined format).
# Each is labelled by the program's format, not by this project's rules:
# - a logrus line by its message, the call site's constant text, with the storage driver's traced
#   calls (`%s.Method(%q, ...)` in distribution's registry/storage/driver/base) reduced to the
#   driver and the method, and by the names of its fields (the values are variables). Which
#   fields a line has depends on the call site and on the request (a content type only when the
#   request sent one), so two labellings are written: by message and field names (OUT.csv), and
#   by message alone (OUT-message.csv), where lines of one template carry different fields;
# - an access-log line by its format (one template).
# The same fixed-seed sample of 2,000 lines is written to both as Content,EventId.
# Usage: scripts/outside-logs/registry.sh [OUT.csv]   (default target/logs-bench/outside/registry.csv)
set -euo pipefail
OUT=${1:-$(dirname "$0")/../../target/logs-bench/outside/registry.csv}
mkdir -p "$(dirname "$OUT")"
DIR=$(mktemp -d)
PORT=55017
cat >"$DIR/config.yml" <<CONF
version: 0.1
log:
  level: debug
  formatter: text
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
CONF
docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
python3 - "http://127.0.0.1:$PORT" <<'PY'
import hashlib, json, random, sys, urllib.request, urllib.error
base = sys.argv[1]
rnd = random.Random(7)
def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
def push_blob(repo, data):
    digest = 'sha256:' + hashlib.sha256(data).hexdigest()
    if rnd.random() < 0.5:
        call('HEAD', f'/v2/{repo}/blobs/{digest}')
    s, h, _ = call('POST', f'/v2/{repo}/blobs/uploads/')
    loc = h.get('Location', '')
    loc = loc[len(base):] if loc.startswith(base) else loc
    sep = '&' if '?' in loc else '?'
    if rnd.random() < 0.5:
        s, h, _ = call('PATCH', loc, data, {'Content-Type': 'application/octet-stream'})
        loc = h.get('Location', loc)
        loc = loc[len(base):] if loc.startswith(base) else loc
        sep = '&' if '?' in loc else '?'
        call('PUT', f'{loc}{sep}digest={digest}')
    else:
        call('PUT', f'{loc}{sep}digest={digest}', data, {'Content-Type': 'application/octet-stream'})
    return digest, len(data)
repos = ['shop/checkout', 'shop/cart', 'platform/gateway', 'payments', 'tools/ci-runner']
pushed = {}
for step in range(700):
    repo = rnd.choice(repos)
    r = rnd.random()
    if r < 0.35:
        layers = [push_blob(repo, rnd.randbytes(rnd.randint(50, 4000))) for _ in range(rnd.randint(1, 3))]
        config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'rootfs': {'type': 'layers', 'diff_ids': [d for d, _ in layers]}}).encode()
        cd, cs = push_blob(repo, config)
        manifest = json.dumps({'schemaVersion': 2, 'mediaType': 'application/vnd.docker.distribution.manifest.v2+json',
            'config': {'mediaType': 'application/vnd.docker.container.image.v1+json', 'size': cs, 'digest': cd},
            'layers': [{'mediaType': 'application/vnd.docker.image.rootfs.diff.tar.gzip', 'size': s, 'digest': d} for d, s in layers]}).encode()
        tag = f'1.{rnd.randint(0, 30)}.{rnd.randint(0, 9)}'
        s, h, _ = call('PUT', f'/v2/{repo}/manifests/{tag}', manifest, {'Content-Type': 'application/vnd.docker.distribution.manifest.v2+json'})
        if s == 201:
            pushed.setdefault(repo, []).append((tag, h.get('Docker-Content-Digest')))
    elif r < 0.6 and pushed.get(repo):
        tag, digest = rnd.choice(pushed[repo])
        accept = {'Accept': 'application/vnd.docker.distribution.manifest.v2+json'}
        call(rnd.choice(['GET', 'HEAD']), f'/v2/{repo}/manifests/{rnd.choice([tag, digest])}', None, accept)
    elif r < 0.7:
        call('GET', f'/v2/{repo}/tags/list')
    elif r < 0.78:
        call('GET', f'/v2/{repo}/manifests/{rnd.choice(["latest", "9.9.9", "sha256:" + "0" * 64])}')
    elif r < 0.84:
        call('GET', f'/v2/{repo}/blobs/sha256:{hashlib.sha256(rnd.randbytes(8)).hexdigest()}')
    elif r < 0.88:
        call('GET', f'/v2/{repo}/blobs/sha256:notadigest{rnd.randint(0, 99)}')
    elif r < 0.93 and pushed.get(repo):
        tag, digest = pushed[repo].pop(rnd.randrange(len(pushed[repo])))
        call('DELETE', f'/v2/{repo}/manifests/{digest}')
    elif r < 0.97:
        call('GET', '/v2/_catalog' + rnd.choice(['', '?n=2', '?n=10']))
    else:
        call('GET', '/v2/')
PY
sleep 0.5
python3 - "$DIR/registry.log" "$OUT" <<'PY'
import csv, random, re, sys
# A logrus text line: time="..." level=L msg=... then key=value pairs (values quoted when needed).
pair = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)')
traced = re.compile(r'^(\w+)\.(\w+)\(')
access = re.compile(r'^\S+ - \S+ \[[^\]]+\] "[^"]*" \d{3} \d+ "[^"]*" "[^"]*"$')
rows = []
for line in open(sys.argv[1], encoding='utf-8', errors='replace'):
    line = line.rstrip('\n')
    if line.startswith('time='):
        m = re.match(r'time="[^"]*" level=\w+ ', line)
        if not m:
            continue
        content = line[m.end():]
        fields = dict(pair.findall(content))
        msg = fields.get('msg', '')
        if msg.startswith('"'):
            msg = msg[1:-1].encode().decode('unicode_escape')
        t = traced.match(msg)
        if t:
            msg = f'{t.group(1)}.{t.group(2)}(...)'
        rows.append((content, msg + ' | ' + ' '.join(sorted(k for k in fields if k != 'msg')), msg))
    elif access.match(line):
        fmt = 'access log: %h - %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"'
        rows.append((line, fmt, fmt))
random.Random(7).shuffle(rows)
rows = rows[:2000]
for path, label in ((sys.argv[2], 1), (sys.argv[2][:-len('.csv')] + '-message.csv', 2)):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['Content', 'EventId'])
        w.writerows((r[0], r[label]) for r in rows)
    print(f'{len(rows)} lines, {len(set(r[label] for r in rows))} templates -> {path}')
PY
