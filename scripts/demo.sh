#!/usr/bin/env bash
# Set-up plus the main job on the embedded default, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
cargo build --quiet --bin poc
POC="$CARGO_TARGET_DIR/debug/poc"
echo "== poc explain objectives/mipo.po"
"$POC" explain objectives/mipo.po
echo
echo "== poc eval objectives/mipo.po --inputs examples/pairs.jsonl --backend jit"
"$POC" eval objectives/mipo.po --inputs examples/pairs.jsonl --backend jit
