#!/usr/bin/env bash
# The GPU check, in one command, for a machine with one CUDA GPU and PyTorch installed:
#
#   bash scripts/gpu-check.sh            # build, parity tests, the 8B run (+ TRL when installed)
#   POC_GPU_CHECK_STEPS=5 bash scripts/gpu-check.sh   # a shorter run
#
# 1. Builds poc against the machine's own libtorch (the `torch` of `$POC_TORCH_PYTHON`, default
#    `python3`), with LIBTORCH_BYPASS_VERSION_CHECK=1 when it is not 2.9.0.
# 2. Runs the device-parity tests on cuda (logps of the transformers fixture, one DPO step, CUDA
#    against CPU): runtime/tests/device_parity.rs with POC_TEST_DEVICE=cuda.
# 3. Trains DPO on a random-init llama3-8b (LoRA r=16, bf16, pairs of 2,048-token sequences, the
#    largest batch of 8, 4, 2, 1 whose memory plan fits) for $POC_GPU_CHECK_STEPS (20) steps and
#    reports tokens/s, MFU (8·N FLOP per token: forward and backward of the policy, forward of the
#    live reference) and the peak GPU memory of the process.
# 4. Runs the same shape with TRL's DPOTrainer + PEFT when `trl` and `peft` import.
#
# Without a CUDA device it runs the same path on the CPU at a toy size (the tiny preset, pairs of
# 128 tokens, 3 steps), so the script itself is tested anywhere; the figures then mean nothing.
# Results go to $POC_GPU_CHECK_OUT (default target/gpu-check): summary.json and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${POC_TORCH_PYTHON:-python3}"
OUT="${POC_GPU_CHECK_OUT:-target/gpu-check}"
mkdir -p "$OUT"

say() { echo "gpu-check: $*" >&2; }

# --- 1. Build against the machine's libtorch. --------------------------------------------
if ! "$PY" -c 'import torch' 2>/dev/null; then
  say "no torch in $PY; falling back to poc's own libtorch (scripts/setup.sh)"
  bash scripts/setup.sh >&2
  . scripts/env.sh
  PY="$(dirname "$LIBTORCH")/../../../bin/python"
else
  TORCH_DIR="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
  TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
  export LIBTORCH="$TORCH_DIR"
  export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  case "$TORCH_VERSION" in
    2.9.0*) ;;
    *) export LIBTORCH_BYPASS_VERSION_CHECK=1 ;;
  esac
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/poc/target-torch-$TORCH_VERSION}"
  say "building against torch $TORCH_VERSION at $TORCH_DIR"
fi
cargo build --quiet --bin poc
POC="$CARGO_TARGET_DIR/debug/poc"

CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$CUDA" = 1 ]; then
  DEVICE=cuda
  MODEL=llama3-8b
  SEQ=2048
  STEPS="${POC_GPU_CHECK_STEPS:-20}"
  BATCHES="8 4 2 1"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
else
  DEVICE=cpu
  MODEL=tiny
  SEQ=128
  STEPS=3
  BATCHES="2"
  GPU_NAME="none (CPU fallback: figures are not meaningful)"
  say "no CUDA device: running the CPU fallback at a toy size"
fi

# --- 2. Parity tests. --------------------------------------------------------------------
say "device-parity tests on $DEVICE"
POC_TEST_DEVICE="$DEVICE" cargo test --quiet --workspace --test device_parity 2>&1 | tee "$OUT/parity.log" >&2

# --- 3. The DPO run. -----------------------------------------------------------------------
# Pairs whose prompt, chosen and rejected completions fill SEQ byte-level tokens.
DATA="$OUT/pairs.jsonl"
"$PY" - "$DATA" "$SEQ" <<'EOF'
import json, random, sys
path, seq = sys.argv[1], int(sys.argv[2])
random.seed(0)
letters = "abcdefghijklmnopqrstuvwxyz "
with open(path, "w") as f:
    for _ in range(64):
        text = lambda n: "".join(random.choice(letters) for _ in range(n))
        prompt = text(seq // 16)
        f.write(json.dumps({"prompt": prompt, "chosen": text(seq), "rejected": text(seq)}) + "\n")
EOF

# Runs a command (stdout to $1, stderr to $2, the peak device memory in MiB to $3), sampling the
# device's used memory above what it used before the start every second (per-process figures
# are often hidden inside containers): the process's peak, its CUDA context included.
measured() {
  local out=$1 err=$2 peakfile=$3
  shift 3
  if [ "$out" = "$err" ]; then "$@" >"$out" 2>&1 & else "$@" >"$out" 2>"$err" & fi
  local pid=$! peak=0 used idle=0
  [ "$DEVICE" = cuda ] && idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$DEVICE" = cuda ]; then
      used=$(( $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0) - idle ))
      [ "$used" -gt "$peak" ] && peak=$used
    fi
    sleep 1
  done
  local rc=0
  wait "$pid" || rc=$?
  echo "$peak" >"$peakfile"
  return "$rc"
}

run_poc() { # batch -> exit code
  measured "$OUT/poc-run.log" "$OUT/poc-run.log" "$OUT/poc-peak-mib" \
    "$POC" run dpo --model "$MODEL" --random-init --device "$DEVICE" --lora 16 --dtype bf16 \
    --max-length "$SEQ" --batch-size "$1" --max-steps "$STEPS" --data "$DATA" \
    --out "$OUT/poc-run" --no-progress --eval-fraction 0
}

BATCH=""
for b in $BATCHES; do
  rm -rf "$OUT/poc-run"
  say "poc: $MODEL, LoRA r=16, bf16, batch $b pairs of $SEQ tokens, $STEPS steps"
  if run_poc "$b"; then BATCH=$b; break; fi
  say "batch $b did not fit or failed: $(tail -n 3 "$OUT/poc-run.log" | tr '\n' ' ')"
done
if [ -z "$BATCH" ]; then
  say "no batch size ran; see $OUT/poc-run.log"
  exit 1
fi

# --- 4. TRL, when installed. -------------------------------------------------------------
TRL_JSON="null"
if "$PY" -c 'import trl, peft' 2>/dev/null; then
  say "TRL DPOTrainer + PEFT on the same shape"
  if measured "$OUT/trl.json" "$OUT/trl.log" "$OUT/trl-peak-mib" \
      "$PY" bench/trl_dpo.py --model "$MODEL" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" \
      --data "$DATA" --device "$DEVICE"; then
    TRL_JSON=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["peak_gpu_mib"]=int(open(sys.argv[2]).read()); print(json.dumps(d))' "$OUT/trl.json" "$OUT/trl-peak-mib")
  else
    say "TRL failed: $(tail -n 1 "$OUT/trl.log")"
  fi
else
  say "trl/peft not installed in $PY: no TRL figures"
fi

# --- Report. -------------------------------------------------------------------------------
"$PY" - "$OUT" "$MODEL" "$BATCH" "$SEQ" "$GPU_NAME" "$TRL_JSON" "$POC" <<'EOF'
import json, os, statistics, sys
out, model, batch, seq, gpu, trl, poc = sys.argv[1:8]
logs = [json.loads(l) for l in open(os.path.join(out, "poc-run", "metrics.jsonl")) if l.strip()]
steps = [l for l in logs if "tokens_per_sec" in l]
rates = sorted(l["tokens_per_sec"] for l in steps[2:] or steps)
tps = statistics.median(rates)
# N, as the run printed it ("(8030.3M parameters)").
line = next((l for l in open(os.path.join(out, "poc-run.log")) if "M parameters" in l), "")
n = float(line.split("(")[1].split("M parameters")[0]) * 1e6 if line else float("nan")
peak_tflops = float(os.environ.get("POC_PEAK_TFLOPS", "989" if "H100" in gpu or "H200" in gpu else "nan"))
mfu = 8 * n * tps / (peak_tflops * 1e12)
peak_mib = int(open(os.path.join(out, "poc-peak-mib")).read().strip() or 0)
summary = {"gpu": gpu, "model": model, "batch_pairs": int(batch), "seq": int(seq),
           "poc": {"tokens_per_sec": tps, "mfu": mfu, "peak_gpu_mib": peak_mib, "params": n},
           "trl": json.loads(trl)}
if summary["trl"]:
    summary["trl"]["mfu"] = 8 * n * summary["trl"]["tokens_per_sec"] / (peak_tflops * 1e12)
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
EOF
