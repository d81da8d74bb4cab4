#!/usr/bin/env bash
# A structured log nobody on the project wrote, held out from the miner's rules (they were written
# before this script was), for `cargo bench --bench logs` (it reads target/logs-bench/outside/*.csv):
# Prometheus (Debian's prometheus, go-kit's logfmt: `ts=... caller=FILE:LINE level=... msg="..."
# key=value ...`) at debug level, started and stopped several times over one data directory,
# scraping targets that answer, refuse, answer 404, answer what is not the exposition format and
# answer too late, evaluating rules of which one fails, its configuration reloaded good and bad.
# Each line is labelled by its `caller`: the call site that wrote it, the program's own event
# (a go-kit call site writes one message with its fields). The Content is the line without its
# `ts` and `caller`; a fixed-seed sample of 2,000 lines is written as Content,EventId.
# Usage: scripts/outside-logs/prometheus.sh [OUT.csv] [CYCLES]
#        (default target/logs-bench/outside/prometheus.csv, 18 cycles of about 15 s)
set -euo pipefail
OUT=${1:-$(dirname "$0")/../../target/logs-bench/outside/prometheus.csv}
CYCLES=${2:-18}
mkdir -p "$(dirname "$OUT")"
DIR=$(mktemp -d)
PORT=39391
TARGETS=39392
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
# Targets: /metrics answers, /bad is not the exposition format, /slow answers after the timeout.
python3 - "$TARGETS" <<'PY' &
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == '/slow':
            time.sleep(2)
        body = {'/metrics': b'# TYPE jobs_total counter\njobs_total{kind="a"} 12\njobs_total{kind="b"} 7\nqueue_depth 3\n',
                '/bad': b'this is { not metrics\n', '/slow': b'late 1\n'}.get(self.path)
        if body is None:
            self.send_response(404); self.end_headers(); return
        self.send_response(200); self.send_header('Content-Type', 'text/plain; version=0.0.4'); self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
PY
cat >"$DIR/good.yml" <<CONF
global: {scrape_interval: 1s, scrape_timeout: 500ms, evaluation_interval: 1s}
rule_files: [$DIR/rules.yml]
scrape_configs:
  - job_name: self
    static_configs: [{targets: ['127.0.0.1:$PORT']}]
  - job_name: app
    static_configs: [{targets: ['127.0.0.1:$TARGETS']}]
  - job_name: refused
    static_configs: [{targets: ['127.0.0.1:1', '127.0.0.1:2']}]
  - job_name: missing
    metrics_path: /nothing
    static_configs: [{targets: ['127.0.0.1:$TARGETS']}]
  - job_name: garbled
    metrics_path: /bad
    static_configs: [{targets: ['127.0.0.1:$TARGETS']}]
  - job_name: slow
    metrics_path: /slow
    static_configs: [{targets: ['127.0.0.1:$TARGETS']}]
CONF
cat >"$DIR/rules.yml" <<'CONF'
groups:
  - name: app
    rules:
      - record: job:jobs:rate10s
        expr: sum by (job) (rate(jobs_total[10s]))
      - alert: TargetDown
        expr: up == 0
      - record: same_labels
        expr: label_replace(up, "job", "one", "", "")
CONF
printf 'global: {scrape_interval: 1s\nscrape_configs: [\n' >"$DIR/bad.yml"
cp "$DIR/good.yml" "$DIR/prom.yml"
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$TARGETS/metrics" >/dev/null && break; sleep 0.1; done
for c in $(seq "$CYCLES"); do
  prometheus --config.file="$DIR/prom.yml" --storage.tsdb.path="$DIR/data" --web.listen-address="127.0.0.1:$PORT" \
    --log.level=debug --web.enable-lifecycle >>"$DIR/prometheus.log" 2>&1 &
  P=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/-/ready" >/dev/null && break; sleep 0.2; done
  sleep 8
  curl -fs -XPOST "http://127.0.0.1:$PORT/-/reload" >/dev/null || true
  sleep 2
  cp "$DIR/bad.yml" "$DIR/prom.yml"
  curl -s -XPOST "http://127.0.0.1:$PORT/-/reload" >/dev/null || true
  curl -s "http://127.0.0.1:$PORT/api/v1/query?query=up" >/dev/null || true
  sleep 2
  cp "$DIR/good.yml" "$DIR/prom.yml"
  curl -fs -XPOST "http://127.0.0.1:$PORT/-/reload" >/dev/null || true
  sleep 2
  kill -TERM "$P"; wait "$P" || true
  echo "cycle $c of $CYCLES: $(wc -l <"$DIR/prometheus.log") lines" >&2
done
PYTHONPATH="$(dirname "$0")" python3 - "$DIR/prometheus.log" "$OUT" <<'PY'
import re, sys
import sample
lines = []
for l in open(sys.argv[1], errors='replace'):
    l = l.rstrip('\n')
    m = re.search(r'(?:^| )caller=(\S+)', l)
    if not l.startswith('ts=') or not m:
        continue
    content = re.sub(r'(^| )(ts|caller)=\S+', '', l).strip()
    lines.append((content, m.group(1)))
sample.write(lines, sys.argv[2], 'call sites')
PY
