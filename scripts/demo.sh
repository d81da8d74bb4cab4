#!/usr/bin/env bash
# The promote demo: builds promote, checks the shipped pipeline, prints its DAG, and shows what
# promote says about a broken pipeline. (The executor issue turns this into a real end-to-end run
# against local environment repos.)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> building promote"
cargo build --release --quiet
promote=target/release/promote

echo
echo "==> promote validate pipelines/"
$promote validate pipelines/

echo
echo "==> promote graph pipelines/checkout.yaml (the waves: stages of one wave run at the same time)"
$promote graph pipelines/checkout.yaml

echo
echo "==> promote graph pipelines/checkout.yaml --format mermaid (paste into a \`\`\`mermaid block)"
$promote graph pipelines/checkout.yaml --format mermaid

echo
echo "==> promote validate examples/broken-pipeline.yaml (every problem at once, then exit 2)"
set +e
$promote validate examples/broken-pipeline.yaml
code=$?
set -e
echo "(exit code $code)"
[ "$code" -eq 2 ]
