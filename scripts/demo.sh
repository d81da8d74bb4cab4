#!/usr/bin/env bash
# The promote demo, end to end on local repos: builds promote, checks and draws the shipped
# pipeline, then creates two bare environment repos (qa, prod) and runs a real pipeline into them:
# deploy qa, soak, a business approval (given by this script), deploy prod. A second run is
# rejected at the approval, and its QA deploy is rolled back. Shows the resulting commits.
# DEMO_DIR chooses the folder (default target/demo); it is recreated.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v git >/dev/null || { echo "demo: needs git: apt-get install git" >&2; exit 1; }
echo "==> building promote"
cargo build --release --quiet
promote=$PWD/target/release/promote

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
    git -C "$work" add -A
    git -C "$work" commit -q -m "checkout in $env"
    git -C "$work" push -q "$demo/envs/$env.git" main
    rm -rf "$work"
done
cp examples/demo/pipeline.yaml "$demo/pipeline.yaml"
cd "$demo"
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
    run=$($promote status | sed -n 1p | cut -d' ' -f1)
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
echo "==> a second run, 1.5.0, rejected at the approval: its QA deploy is rolled back"
set +e
$promote run pipeline.yaml --version 1.5.0 2>/dev/null &
runner=$!
set -e
for _ in $(seq 1 100); do
    run2=$($promote status | sed -n 1p | cut -d' ' -f1)
    [ "$run2" != "$run" ] && break
    sleep 0.1
done
wait_for "$run2" business-approval
$promote reject "$run2" business-approval --as alice --reason "error budget exhausted"
set +e
wait "$runner"
code=$?
set -e
echo "(exit code $code: the run failed, after rollback)"
[ "$code" -eq 1 ]
$promote status "$run2"

for env in qa prod; do
    echo
    echo "==> git log of envs/$env.git"
    git --git-dir "envs/$env.git" log --format='%h %an: %s' main
done
echo
echo "==> the promotion commit in prod"
git --git-dir envs/prod.git show --format='%B' main | head -30
