#!/usr/bin/env bash
# The promote demo, end to end on local repos: builds promote, checks and draws the shipped
# pipeline, then creates two bare environment repos (qa, prod), starts a sample service that
# follows the QA repo and a Prometheus that scrapes it, and runs a real pipeline into them:
# deploy qa, check its metrics, a business approval (given by this script), deploy prod. A second
# run, of a version the sample service serves badly, fails its metrics check and its QA deploy is
# rolled back. Shows the resulting commits.
# DEMO_DIR chooses the folder (default target/demo); it is recreated.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v git >/dev/null || { echo "demo: needs git: apt-get install git" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "demo: needs Prometheus for the metrics check: apt-get install prometheus" >&2; exit 1; }
command -v python3 >/dev/null || { echo "demo: needs python3 (to find a free port): apt-get install python3" >&2; exit 1; }
echo "==> building promote and the sample service"
cargo build --release --quiet --bin promote --example sample_service
promote=$PWD/target/release/promote
sample=$PWD/target/release/examples/sample_service
pipeline_src=$PWD/examples/demo/pipeline.yaml
repo_root=$PWD

echo
echo "==> promote validate pipelines/"
$promote validate pipelines/

echo
echo "==> promote graph pipelines/checkout.yaml (the waves: stages of one wave run at the same time)"
$promote graph pipelines/checkout.yaml

echo
echo "==> promote validate examples/broken-pipeline.yaml (every problem at once, then exit 2)"
set +e
$promote validate examples/broken-pipeline.yaml
code=$?
set -e
echo "(exit code $code)"
[ "$code" -eq 2 ]

demo=${DEMO_DIR:-$PWD/target/demo}
rm -rf "$demo"
mkdir -p "$demo/envs"
echo
echo "==> demo folder: $demo (environment repos in $demo/envs, state in $demo/.promote)"
export GIT_AUTHOR_NAME="Platform Team" GIT_AUTHOR_EMAIL=platform@example.com
export GIT_COMMITTER_NAME="Platform Team" GIT_COMMITTER_EMAIL=platform@example.com
for env in qa prod; do
    git init -q --bare -b main "$demo/envs/$env.git"
    work=$(mktemp -d)
    git init -q -b main "$work"
    mkdir -p "$work/apps/checkout"
    cp examples/demo/kustomization.yaml "$work/apps/checkout/kustomization.yaml"
    # prod also holds the Deployment (no resource limits: the policies warn about it).
    [ "$env" = prod ] && cp examples/demo/deployment.yaml "$work/apps/checkout/deployment.yaml"
    git -C "$work" add -A
    git -C "$work" commit -q -m "checkout in $env"
    git -C "$work" push -q "$demo/envs/$env.git" main
    rm -rf "$work"
done
cd "$demo"

# The sample service plays checkout as Argo CD would run it: it follows envs/qa.git. 1.5.0 is bad.
mkdir -p logs
"$sample" --repo envs/qa.git --file apps/checkout/kustomization.yaml --bad 1.5.0 --port-file sample.port --log logs/checkout.log 2>sample.log &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s sample.port ] && break; sleep 0.1; done
prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: checkout\n    static_configs: [{targets: ["127.0.0.1:%s"]}]\n' "$(cat sample.port)" > prometheus.yml
prometheus --config.file=prometheus.yml --storage.tsdb.path=prometheus --web.listen-address="127.0.0.1:$prom_port" 2>prometheus.log &
pids+=($!)
ready=
for _ in $(seq 1 150); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$prom_port/-/ready')" 2>/dev/null; then ready=1; break; fi
    sleep 0.2
done
[ -n "$ready" ] || { echo "demo: Prometheus did not start; its log:" >&2; cat prometheus.log >&2; exit 1; }
# Wait for Prometheus' first scrapes of the service (its first one comes a few seconds after start).
scraped=
for _ in $(seq 1 150); do
    if python3 - "$prom_port" <<'PY' 2>/dev/null; then scraped=1; break; fi
import json, sys, urllib.request
q = "count_over_time(up{job=\"checkout\"}[1m])"
url = "http://127.0.0.1:%s/api/v1/query?query=%s" % (sys.argv[1], urllib.parse.quote(q))
r = json.load(urllib.request.urlopen(url))["data"]["result"]
sys.exit(0 if r and float(r[0]["value"][1]) >= 2 else 1)
PY
    sleep 0.2
done
[ -n "$scraped" ] || { echo "demo: Prometheus never scraped the sample service; its log:" >&2; cat prometheus.log >&2; exit 1; }
echo
echo "==> sample service on 127.0.0.1:$(cat sample.port) (following envs/qa.git), Prometheus on 127.0.0.1:$prom_port scraping it every second"
sed "s|http://127.0.0.1:9090|http://127.0.0.1:$prom_port|" "$pipeline_src" > pipeline.yaml
# The shipped policies and users file (alice and bob are release managers).
cp -r "$repo_root/pipelines/governance/policies" policies
cp "$repo_root/pipelines/governance/users.yaml" users.yaml
export PROMOTE_GIT_AUTHOR="promote demo <promote@example.com>" PROMOTE_USER=ci-bot

echo
echo "==> promote graph pipeline.yaml"
$promote graph pipeline.yaml

# Readers below consume all of promote's output (sed -n 1p, grep >/dev/null, not head or grep -q):
# with pipefail, a reader that quits early would make promote's SIGPIPE fail the pipeline.

# Waits until stage $2 of run $1 is waiting.
wait_for() {
    for _ in $(seq 1 300); do
        if $promote status "$1" | grep -E "^  $2 +waiting" >/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "demo: $2 never waited" >&2
    $promote status "$1" >&2
    return 1
}

echo
echo "==> promote run pipeline.yaml --version 1.4.2 (in the background; this script approves as alice)"
$promote run pipeline.yaml --version 1.4.2 &
runner=$!
for _ in $(seq 1 100); do
    # Until the run has made the state, status says there is none (exit 2): look again.
    run=$({ $promote status 2>/dev/null || true; } | sed -n 1p | cut -d' ' -f1)
    [ -n "$run" ] && [ "$run" != "no" ] && break
    sleep 0.1
done
wait_for "$run" business-approval
$promote approve "$run" business-approval --as alice --comment "numbers look good"
wait "$runner"

echo
echo "==> promote status $run"
$promote status "$run"

echo
echo "==> promote watch run: after its run, QA stays under watch (its error rate every 2 s for 8 s; promote serve does this by itself)"
$promote watch run
$promote watch list

echo
echo "==> a second run, 1.5.0: the sample service serves it badly, the metrics and log checks fail, QA is rolled back"
set +e
$promote run pipeline.yaml --version 1.5.0 2>/dev/null
code=$?
set -e
echo "(exit code $code: the run failed, after rollback)"
[ "$code" -eq 1 ]
run2=$($promote status | sed -n 1p | cut -d' ' -f1)
$promote status "$run2"

for env in qa prod; do
    echo
    echo "==> git log of envs/$env.git"
    git --git-dir "envs/$env.git" log --format='%h %an: %s' main
done
echo
echo "==> the promotion commit in prod"
git --git-dir envs/prod.git show --format='%B' main | sed -n 1,30p

echo
echo "==> promote audit log (the last entries of the hash-chained trail)"
$promote audit log | tail -n 12

echo
echo "==> promote audit verify"
$promote audit verify

echo
echo "==> promote serve: a signed GitHub push event of tag v1.6.0 starts a run; alice approves it through the server"
# The server's API authenticates with the users file's tokens: give alice one.
alice_token=$($promote token --for alice | sed -n 1p | sed 's/.* //')
alice_hash=$(printf %s "$alice_token" | sha256sum | cut -d' ' -f1)
sed -i "s|^    email: alice@example.com|    email: alice@example.com\n    token: sha256:$alice_hash|" users.yaml
printf 'demo-webhook-secret\n' > hook.secret
$promote serve --listen 127.0.0.1:0 --pipelines . 2>serve.log &
server=$!
pids+=($server)
url=
for _ in $(seq 1 100); do
    url=$(sed -n 's/^promote serve: listening on //p' serve.log)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "demo: promote serve did not start; its log:" >&2; cat serve.log >&2; exit 1; }
echo "(promote serve on $url)"
# What GitHub sends for `git push origin v1.6.0`, signed with the trigger's secret.
python3 - "$url" <<'PY'
import hashlib, hmac, json, sys, urllib.request
body = json.dumps({"ref": "refs/tags/v1.6.0", "after": "b6f4c5e2a1d3c0f9e8d7c6b5a4f3e2d1c0b9a8f7", "deleted": False,
                   "repository": {"full_name": "acme/checkout"}}).encode()
sig = "sha256=" + hmac.new(b"demo-webhook-secret", body, hashlib.sha256).hexdigest()
req = urllib.request.Request(sys.argv[1] + "/hooks/github", data=body, method="POST",
    headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "demo-1", "X-Hub-Signature-256": sig})
answer = json.load(urllib.request.urlopen(req))
print("webhook answered:", json.dumps(answer))
PY
export PROMOTE_TOKEN=$alice_token
run3=$($promote status --server "$url" | sed -n 1p | cut -d' ' -f1)
wait_for "$run3" business-approval
$promote approve "$run3" business-approval --as alice --comment "approved through the server" --server "$url"
for _ in $(seq 1 300); do
    if $promote status --server "$url" "$run3" | sed -n 1p | grep succeeded >/dev/null; then break; fi
    sleep 0.1
done
$promote status --server "$url" "$run3"
unset PROMOTE_TOKEN
kill -TERM "$server"
wait "$server"
echo "(promote serve stopped)"
