#!/usr/bin/env bash
# The GPU check, in one command, for a machine with one CUDA GPU and PyTorch: device parity of
# poc's kernels against the CPU, then DPO with LoRA on a Llama-3-8B-shaped model, poc and
# (when installed) TRL side by side, MFU from poc's own FLOP count. Results in
# $POC_GPU_CHECK_OUT/summary.json (default target/gpu-check).
#
# With Rust (cargo on PATH): builds `poc` in release and the device-parity test binary against the
# torch of $POC_TORCH_PYTHON (LIBTORCH_BYPASS_VERSION_CHECK=1 when it is not 2.9.0), then checks:
#
#   POC_TORCH_PYTHON=/path/to/venv/bin/python bash scripts/gpu-check.sh
#
# Without Rust, with binaries built elsewhere against the same torch version (scripts/torch-compat.sh
# builds poc; `cargo test --workspace --no-run --test device_parity` prints the test binary):
#
#   POC_BIN=./poc POC_PARITY_BIN=./device_parity POC_TORCH_PYTHON=/opt/torch/.venv/bin/python \
#     bash scripts/gpu-check.sh
#
# Everything it needs is checked first and all that is missing is listed at once (exit 2):
# Python with torch (and safetensors), nvidia-smi and a CUDA device torch sees (when the machine
# has an NVIDIA GPU), the binaries, that they load against that torch (`ldd`, then each run once
# with LD_BIND_NOW=1), or cargo to build them; on CUDA, the disk space the 8B files take.
#
# Steps, and what they take on one H100 (estimates: no run on a GPU has been timed yet):
# 1. Build (with cargo only; minutes, once).
# 2. A random Llama-3-8B checkpoint (Meta-Llama-3-8B's config.json, bf16 weights drawn N(0, 0.02)
#    on the GPU by torch, norms 1, safetensors shards, poc's byte-level tokenizer.json), written
#    once into $POC_GPU_CHECK_CACHE (default ~/.cache/poc/gpu-check) and reused: ~1-2 min, 16 GB.
# 3. Device parity on CUDA (runtime/tests/device_parity.rs with POC_TEST_DEVICE=cuda: the
#    transformers fixture's log-probs, one DPO step's loss, gradient norm and gradients against
#    the CPU): ~30 s. A failure is reported (summary.json, stderr, exit 1 at the end), and the
#    benchmark still runs.
# 4. poc: `poc run dpo --model <the checkpoint>` with LoRA r=16 (alpha 32) on q,k,v,o_proj, bf16,
#    pairs of 2,048-token sequences, the largest batch of 8, 4, 2, 1 pairs that runs (poc's memory
#    plan refuses a batch that cannot fit before loading anything), $POC_GPU_CHECK_STEPS (20)
#    steps: load ~30-60 s, steps ~1-2 s each, the final merged checkpoint (16 GB) ~30-60 s.
#    Tokens/s, TFLOP/s and MFU are the medians after two warm-up steps of poc's own metrics
#    (perf/tflops, perf/mfu: forward, backward without weight gradients for frozen matrices, the
#    reference forward, attention's T² term; the peak from the GPU's name, or POC_PEAK_TFLOPS).
#    Peak GPU memory: nvidia-smi's used memory above the idle figure, sampled every second.
# 5. TRL (bench/trl_dpo.py) when trl, peft and datasets import: DPOTrainer + PEFT on the same
#    checkpoint, data, batch, length, steps and LoRA targets: ~1-2 min. Its MFU is its tokens/s
#    times poc's FLOPs per token (the same shape), over the same peak.
# The whole check is held to $POC_GPU_CHECK_BUDGET seconds (default 540): each step gets what is
# left, TRL is skipped when under 90 s remain. The first run takes ~5 min, later ones ~4.
#
# Without a CUDA device (or with POC_GPU_CHECK_DEVICE=cpu) the same path runs on the CPU at a toy
# size (a 2-layer random checkpoint written the same way, pairs of 128 tokens, 3 steps), so the
# script itself is tested anywhere; the figures then mean nothing.
#
# Other settings: POC_GPU_CHECK_STEPS, POC_GPU_CHECK_OUT, POC_GPU_CHECK_CACHE, POC_PEAK_TFLOPS,
# POC_GPU_CHECK_BATCHES (the batch sizes to try, "8 4 2 1"), CARGO_TARGET_DIR.
#
# Exit: 0 all passed; 1 the parity tests failed or no batch ran; 2 something needed is missing.
set -uo pipefail
# Paths given relative to where the script was started from.
absolute() { case "$1" in /* | "") echo "$1" ;; */*) echo "$PWD/$1" ;; *) echo "$1" ;; esac; }
PY=$(absolute "${POC_TORCH_PYTHON:-}")
[ -n "${POC_BIN:-}" ] && POC_BIN=$(absolute "$POC_BIN")
[ -n "${POC_PARITY_BIN:-}" ] && POC_PARITY_BIN=$(absolute "$POC_PARITY_BIN")
[ -n "${POC_GPU_CHECK_OUT:-}" ] && POC_GPU_CHECK_OUT=$(absolute "$POC_GPU_CHECK_OUT/")
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
OUT="${POC_GPU_CHECK_OUT:-target/gpu-check}"
POC_CACHE="${POC_CACHE:-$HOME/.cache/poc}"
CACHE="${POC_GPU_CHECK_CACHE:-$POC_CACHE/gpu-check}"
BUDGET="${POC_GPU_CHECK_BUDGET:-540}"
LORA_TARGETS="q_proj,k_proj,v_proj,o_proj"
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
SECONDS=0

say() { echo "gpu-check: $*" >&2; }
# The budget counts from the end of the build.
BUDGET_START=0
left() { echo $((BUDGET - (SECONDS - BUDGET_START))); }
# Seconds a step may take: what is left of the budget, at most $1, at least 30.
limit() { local l; l=$(left); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 30 ] && l=30; echo "$l"; }
is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
# Seconds of each step, for summary.json.
declare -A TOOK
mark() { TOOK[$1]=$SECONDS; }
since() { echo $((SECONDS - ${TOOK[$1]})); }

# --- 0. Prerequisites: all that is missing, listed at once. --------------------------------
MISSING=()
missing() { MISSING+=("$*"); }
HAVE_CARGO=0
command -v cargo >/dev/null 2>&1 && HAVE_CARGO=1

# The Python whose torch poc runs against: POC_TORCH_PYTHON, else python3 when it has torch,
# else (with cargo) the venv of scripts/setup.sh.
if [ -z "$PY" ]; then
  PY=python3
  if ! python3 -c 'import torch' >/dev/null 2>&1 && [ -x "$POC_CACHE/torch-2.9.0/bin/python" ]; then
    PY="$POC_CACHE/torch-2.9.0/bin/python"
  fi
fi
TORCH_DIR=""
TORCH_VERSION=""
TORCH_CUDA=0
TORCH_GPU=""
if ! command -v "$PY" >/dev/null 2>&1; then
  missing "Python: \`$PY\` not found (set POC_TORCH_PYTHON to the Python whose torch poc should use)"
elif ! info=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__); print(int(torch.cuda.is_available())); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1); then
  missing "torch: \`$PY\` cannot import torch ($(echo "$info" | tail -n 1)); set POC_TORCH_PYTHON to a Python that has it"
else
  TORCH_DIR=$(echo "$info" | sed -n 1p)
  TORCH_VERSION=$(echo "$info" | sed -n 2p)
  TORCH_CUDA=$(echo "$info" | sed -n 3p)
  TORCH_GPU=$(echo "$info" | sed -n 4p)
  "$PY" -c 'import safetensors.torch' >/dev/null 2>&1 ||
    missing "safetensors: \`$PY\` cannot import safetensors.torch (pip install safetensors; transformers brings it)"
  export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# The device: CUDA when the machine has an NVIDIA GPU (then torch must see it), else the CPU.
DEVICE="${POC_GPU_CHECK_DEVICE:-auto}"
HAVE_SMI=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && HAVE_SMI=1
# nvidia-smi's index of the device torch calls cuda:0 (CUDA_VISIBLE_DEVICES' first entry).
SMI_ID="${CUDA_VISIBLE_DEVICES:-0}"
SMI_ID="${SMI_ID%%,*}"
case "$DEVICE" in
  auto)
    if [ "$TORCH_CUDA" = 1 ] || [ "$HAVE_SMI" = 1 ]; then DEVICE=cuda; else DEVICE=cpu; fi ;;
  cuda | cpu) ;;
  *) missing "POC_GPU_CHECK_DEVICE=$DEVICE: expected cuda, cpu or auto" ;;
esac
if [ "$DEVICE" = cuda ]; then
  [ "$HAVE_SMI" = 1 ] ||
    missing "nvidia-smi: not found or sees no GPU (the driver's tool; the check reads the GPU's name and memory with it)"
  if [ -n "$TORCH_VERSION" ] && [ "$TORCH_CUDA" != 1 ]; then
    missing "CUDA: torch $TORCH_VERSION in \`$PY\` sees no CUDA device (a CPU-only torch, or CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES:-}' hides it)"
  fi
fi
command -v timeout >/dev/null 2>&1 || missing "timeout: coreutils' timeout is not on PATH"

# The binaries: prebuilt (POC_BIN, POC_PARITY_BIN), or built here with cargo.
BUILD=0
if [ -z "${POC_BIN:-}" ] || [ -z "${POC_PARITY_BIN:-}" ]; then
  if [ "$HAVE_CARGO" = 1 ]; then
    BUILD=1
  else
    [ -z "${POC_BIN:-}" ] && missing "poc: no cargo to build it and POC_BIN is not set (a release \`poc\` built against torch $TORCH_VERSION)"
    [ -z "${POC_PARITY_BIN:-}" ] && missing "device-parity tests: no cargo to build them and POC_PARITY_BIN is not set (the binary \`cargo test --workspace --no-run --test device_parity\` prints)"
  fi
fi
# A binary is usable when it exists, every library it needs resolves (torch's from TORCH_DIR/lib)
# and it runs with every symbol bound at start; poc then computes one small objective on
# libtorch's tensors (a binary built against another torch version loads, then fails on its
# first tensor).
check_binary() { # what path args...
  local what=$1 path=$2 out
  shift 2
  if [ ! -f "$path" ]; then missing "$what: $path does not exist"; return 1; fi
  if [ ! -x "$path" ]; then missing "$what: $path is not executable"; return 1; fi
  [ -n "$TORCH_DIR" ] || return 1 # no torch to run it against (listed above)
  if command -v ldd >/dev/null 2>&1; then
    out=$(ldd "$path" 2>&1 | grep 'not found')
    if [ -n "$out" ]; then
      missing "$what: $path needs libraries that are not found (with $TORCH_DIR/lib on LD_LIBRARY_PATH): $(echo "$out" | awk '{print $1}' | tr '\n' ' ')"
      return 1
    fi
  fi
  if ! out=$(LD_BIND_NOW=1 "$path" "$@" 2>&1); then
    missing "$what: $path does not run ($(echo "$out" | tail -n 1 | cut -c1-200)); was it built against torch $TORCH_VERSION?"
    return 1
  fi
}
if [ -n "${POC_BIN:-}" ] && check_binary "poc" "$POC_BIN" --version; then
  echo '{"policy_chosen_logps": -1, "policy_rejected_logps": -2, "ref_chosen_logps": -1.5, "ref_rejected_logps": -1.5}' >"$OUT/smoke.jsonl"
  if ! out=$("$POC_BIN" eval dpo --inputs "$OUT/smoke.jsonl" --backend burn 2>&1); then
    why=$(echo "$out" | grep -m 1 -oE 'Torch\("[^\]{0,120}' || echo "$out" | grep -v '^\s*$' | head -n 1 | cut -c1-200)
    missing "poc: $POC_BIN fails on its first libtorch tensor ($why); it was built against another torch than $TORCH_VERSION"
  fi
fi
[ -n "${POC_PARITY_BIN:-}" ] && check_binary "device-parity tests" "$POC_PARITY_BIN" --list >/dev/null

CKPT_NAME=llama3-8b-random
[ "$DEVICE" = cpu ] && CKPT_NAME=toy-random
CKPT="$CACHE/$CKPT_NAME"
if [ "$DEVICE" = cuda ]; then
  # The checkpoint (16 GB, unless cached) and poc's final merged checkpoint (16 GB).
  need=17
  [ -f "$CKPT/.complete" ] || need=$((need + 16))
  mkdir -p "$CACHE"
  for dir in "$CACHE" "$OUT"; do
    free=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print int($4 / 1048576)}')
    if is_number "${free:-}" && [ "$free" -lt "$need" ]; then
      missing "disk: $free GiB free under $dir, the 8B check needs about $need GiB there (POC_GPU_CHECK_CACHE, POC_GPU_CHECK_OUT move it)"
    fi
  done
fi

if [ ${#MISSING[@]} -gt 0 ]; then
  say "cannot run; missing:"
  for m in "${MISSING[@]}"; do echo "  - $m" >&2; done
  exit 2
fi
say "torch $TORCH_VERSION ($PY), device $DEVICE, $(left) s budget"

# --- 1. Build (with cargo, when no prebuilt binaries were given). ---------------------------
mark build
if [ "$BUILD" = 1 ]; then
  export LIBTORCH="$TORCH_DIR"
  case "$TORCH_VERSION" in
    2.9.0*) ;;
    *) export LIBTORCH_BYPASS_VERSION_CHECK=1 ;;
  esac
  if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    # The target directory of scripts/env.sh for its torch, else one per torch version (as
    # scripts/torch-compat.sh uses), so that builds against two libtorches do not alternate.
    if [ "$TORCH_DIR" -ef "$(ls -d "$POC_CACHE"/torch-2.9.0/lib/python3*/site-packages/torch 2>/dev/null | head -n 1)" ]; then
      export CARGO_TARGET_DIR="$POC_CACHE/target"
    else
      export CARGO_TARGET_DIR="$POC_CACHE/target-torch-$TORCH_VERSION"
    fi
  fi
  say "building against torch $TORCH_VERSION at $TORCH_DIR into $CARGO_TARGET_DIR"
  if [ -z "${POC_BIN:-}" ]; then
    if ! cargo build --release --bin poc >&2; then say "cargo build --release --bin poc failed"; exit 1; fi
    POC_BIN="$CARGO_TARGET_DIR/release/poc"
  fi
  if [ -z "${POC_PARITY_BIN:-}" ]; then
    POC_PARITY_BIN=$(cargo test --workspace --no-run --test device_parity --message-format=json |
      "$PY" -c 'import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "device_parity" and m.get("executable"):
        print(m["executable"])')
    if [ -z "$POC_PARITY_BIN" ]; then say "building the device_parity tests failed (cargo test --workspace --no-run --test device_parity)"; exit 1; fi
  fi
fi
BUILD_SECONDS=$(since build)
BUDGET_START=$SECONDS
POC="$POC_BIN"
export POC_PYTHON="$PY"

if [ "$DEVICE" = cuda ]; then
  SEQ=2048
  STEPS="${POC_GPU_CHECK_STEPS:-20}"
  BATCHES="${POC_GPU_CHECK_BATCHES:-8 4 2 1}"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$SMI_ID" 2>/dev/null | head -n 1)
  [ -n "$GPU_NAME" ] || GPU_NAME="$TORCH_GPU"
  GPU_MEMORY=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i "$SMI_ID" 2>/dev/null | head -n 1)
  GPU_DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i "$SMI_ID" 2>/dev/null | head -n 1)
else
  SEQ=128
  STEPS="${POC_GPU_CHECK_STEPS:-3}"
  BATCHES="${POC_GPU_CHECK_BATCHES:-2 1}"
  GPU_NAME="none (CPU: the figures are not meaningful)"
  GPU_MEMORY=""
  GPU_DRIVER=""
  say "no CUDA device: the CPU path at a toy size"
fi

# --- 2. The random checkpoint, written once. ---------------------------------------------
mark checkpoint
if [ ! -f "$CKPT/.complete" ]; then
  say "writing a random $CKPT_NAME checkpoint into $CKPT (once)"
  rm -rf "$CKPT.tmp" && mkdir -p "$CKPT.tmp"
  # poc's byte-level tokenizer.json, from a one-step run of the embedded tiny model.
  TOKRUN="$CACHE/tokenizer-run"
  rm -rf "$TOKRUN"
  if ! "$POC" run dpo --max-steps 1 --batch-size 1 --device cpu --no-progress --out "$TOKRUN" \
      >"$OUT/tokenizer-run.log" 2>&1 || [ ! -f "$TOKRUN/checkpoint-1/tokenizer.json" ]; then
    say "poc's tiny run (for its tokenizer.json) failed: $(tail -n 3 "$OUT/tokenizer-run.log" | tr '\n' ' ')"
    exit 1
  fi
  cp "$TOKRUN/checkpoint-1/tokenizer.json" "$CKPT.tmp/" && rm -rf "$TOKRUN"
  if ! "$PY" - "$CKPT.tmp" "$DEVICE" >"$OUT/checkpoint.log" 2>&1 <<'EOF'
# A random bf16 Llama checkpoint in transformers' layout: Meta-Llama-3-8B's config.json on CUDA,
# a toy shape on the CPU; weights N(0, 0.02) drawn by torch on the device, RMSNorm weights 1,
# safetensors shards of at most 5 GB with their index.
import json, os, sys
import torch
from safetensors.torch import save_file

out, device = sys.argv[1], sys.argv[2]
if device == "cuda":
    shape = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 bos_token_id=128000, eos_token_id=128001)
else:  # the byte-level tokenizer's vocabulary (poc's tiny: 264), its <|begin_of_text|>, <|end_of_text|>
    shape = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=4, vocab_size=264,
                 bos_token_id=256, eos_token_id=257)
config = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
          "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 8192,
          "mlp_bias": False, "model_type": "llama", "pretraining_tp": 1, "rms_norm_eps": 1e-05,
          "rope_scaling": None, "rope_theta": 500000.0, "tie_word_embeddings": False,
          "torch_dtype": "bfloat16", "use_cache": True, **shape}
h, i, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
d = h // shape["num_attention_heads"]
kv = shape["num_key_value_heads"] * d
names = [("model.embed_tokens.weight", (v, h))]
for l in range(shape["num_hidden_layers"]):
    p = f"model.layers.{l}."
    names += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
              (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
              (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
              (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
              (p + "mlp.down_proj.weight", (h, i))]
names += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
# Shards of at most 5 GB (2 bytes per bf16 value), in order.
shards, size = [[]], 0
for name, shp in names:
    n = 2 * torch.Size(shp).numel()
    if shards[-1] and size + n > 5 * 10**9:
        shards.append([])
        size = 0
    shards[-1].append((name, shp))
    size += n
gen = torch.Generator(device=device).manual_seed(0)
weight_map, total = {}, 0
for k, shard in enumerate(shards):
    file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    tensors = {}
    for name, shp in shard:
        if len(shp) == 1:
            t = torch.ones(shp, dtype=torch.bfloat16)
        else:
            t = torch.empty(shp, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=gen).cpu()
        tensors[name] = t
        weight_map[name] = file
        total += 2 * t.numel()
    save_file(tensors, os.path.join(out, file), metadata={"format": "pt"})
    print(f"wrote {file}: {len(tensors)} tensors", flush=True)
with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
print(f"{total / 2:.0f} parameters", flush=True)
EOF
  then
    say "writing the random checkpoint failed: $(tail -n 3 "$OUT/checkpoint.log" | tr '\n' ' ')"
    exit 1
  fi
  touch "$CKPT.tmp/.complete"
  rm -rf "$CKPT" && mv "$CKPT.tmp" "$CKPT"
fi
CHECKPOINT_SECONDS=$(since checkpoint)

# --- 3. Device parity (a failure is reported; the benchmark runs all the same). -------------
mark parity
say "device-parity tests on $DEVICE"
PARITY_STATUS=pass
# The tests find their fixtures through CARGO_MANIFEST_DIR (cargo sets it; a prebuilt binary
# would otherwise look where it was built).
CARGO_MANIFEST_DIR="$REPO/runtime" POC_TEST_DEVICE="$DEVICE" \
  timeout --kill-after=10 "$(limit 240)" \
  "$POC_PARITY_BIN" --test-threads 1 >"$OUT/parity.log" 2>&1
rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  PARITY_STATUS=timeout
elif [ "$rc" != 0 ]; then
  PARITY_STATUS=fail
fi
if [ "$PARITY_STATUS" != pass ]; then
  say "PARITY $PARITY_STATUS (exit $rc); see $OUT/parity.log:"
  # Each failing test's output up to its backtrace (the last lines when none is there).
  shown=$(awk '/^---- /{p=1} /^stack backtrace:|^failures:$/{p=0} p && NF' "$OUT/parity.log" | cut -c1-300 | head -n 40)
  [ -n "$shown" ] || shown=$(tail -n 5 "$OUT/parity.log" | cut -c1-300)
  echo "$shown" >&2
fi
PARITY_SECONDS=$(since parity)

# --- 4. poc: the largest batch that runs. ------------------------------------------------
# Pairs whose prompt and completions overfill SEQ byte-level tokens, so every sequence is SEQ
# tokens long on poc's side and TRL's.
DATA="$OUT/pairs.jsonl"
"$PY" - "$DATA" "$SEQ" <<'EOF'
import json, random, sys
path, seq = sys.argv[1], int(sys.argv[2])
random.seed(0)
letters = "abcdefghijklmnopqrstuvwxyz "
text = lambda n: "".join(random.choice(letters) for _ in range(n))
with open(path, "w") as f:
    for _ in range(64):
        f.write(json.dumps({"prompt": text(seq // 16), "chosen": text(seq), "rejected": text(seq)}) + "\n")
EOF

# Runs a command under a time limit (stdout and stderr to $1; the peak device memory in MiB,
# or "" when not known, to $2): nvidia-smi's used memory above the figure before the start,
# sampled every second (per-process figures are often hidden inside containers), so the
# process's peak with its CUDA context. Non-numbers (a MIG slice prints [N/A]) are skipped.
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$SMI_ID" 2>/dev/null | head -n 1 | tr -d ' '; }
measured() { # log peakfile seconds cmd...
  local log=$1 peakfile=$2 secs=$3
  shift 3
  timeout --kill-after=30 "$secs" "$@" >"$log" 2>&1 &
  local pid=$! peak="" used idle=""
  [ "$DEVICE" = cuda ] && idle=$(gpu_used)
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$DEVICE" = cuda ] && is_number "${idle:-}"; then
      used=$(gpu_used)
      if is_number "${used:-}"; then
        used=$((used - idle))
        if [ -z "$peak" ] || [ "$used" -gt "$peak" ]; then peak=$used; fi
      fi
    fi
    sleep 1
  done
  local rc=0
  wait "$pid" || rc=$?
  echo "$peak" >"$peakfile"
  return "$rc"
}

mark poc
BATCH=""
TRIED=""
for b in $BATCHES; do
  if [ "$(left)" -lt 60 ]; then TRIED="$TRIED$b: not tried, the time budget ran out"$'\n'; break; fi
  rm -rf "$OUT/poc-run"
  say "poc: $CKPT_NAME, LoRA r=16 on $LORA_TARGETS, bf16, batch $b pairs of $SEQ tokens, $STEPS steps"
  measured "$OUT/poc-run.log" "$OUT/poc-peak-mib" "$(( $(left) - 30 ))" \
    "$POC" run dpo --model "$CKPT" --device "$DEVICE" --lora 16 --lora-alpha 32 \
    --lora-target-modules "$LORA_TARGETS" --dtype bf16 --max-length "$SEQ" --batch-size "$b" \
    --max-steps "$STEPS" --data "$DATA" --out "$OUT/poc-run" --no-progress --eval-fraction 0
  rc=$?
  if [ "$rc" = 0 ]; then BATCH=$b; TRIED="$TRIED$b: ran"$'\n'; break; fi
  why=$(grep -v '^\s*$' "$OUT/poc-run.log" | tail -n 3 | tr '\n' ' ' | cut -c1-400)
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && why="timed out ($why)"
  TRIED="$TRIED$b: exit $rc: $why"$'\n'
  say "batch $b did not run (exit $rc): $why"
  cp "$OUT/poc-run.log" "$OUT/poc-run-batch$b.log"
done
# The final checkpoint (the merged 8B model) was written, which is part of the check; drop it.
rm -rf "$OUT"/poc-run/checkpoint-*
POC_SECONDS=$(since poc)
[ -z "$BATCH" ] && say "no batch size ran; see $OUT/poc-run*.log"

# --- 5. TRL on the same shape, when installed. -------------------------------------------
mark trl
TRL_WHY=""
if [ -z "$BATCH" ]; then
  TRL_WHY="not run: poc ran no batch to compare with"
elif ! why=$("$PY" -c 'import trl, peft, datasets, transformers' 2>&1); then
  TRL_WHY="not installed in $PY: $(echo "$why" | tail -n 1)"
elif [ "$(left)" -lt 90 ]; then
  TRL_WHY="skipped: $(left) s of the $BUDGET s budget left"
else
  say "TRL DPOTrainer + PEFT on the same shape (batch $BATCH)"
  if ! measured "$OUT/trl.log" "$OUT/trl-peak-mib" "$(( $(left) - 15 ))" \
      "$PY" bench/trl_dpo.py --model-dir "$CKPT" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" \
      --data "$DATA" --device "$DEVICE" --lora-targets "$LORA_TARGETS" --json "$OUT/trl.json"; then
    TRL_WHY="failed: $(grep -v '^\s*$' "$OUT/trl.log" | tail -n 1)"
    say "TRL $TRL_WHY"
  fi
fi
TRL_SECONDS=$(since trl)

# --- Report. -------------------------------------------------------------------------------
export GC_OUT="$OUT" GC_DEVICE="$DEVICE" GC_GPU="$GPU_NAME" GC_GPU_MEMORY="$GPU_MEMORY" GC_TORCH_GPU="$TORCH_GPU" \
  GC_GPU_DRIVER="$GPU_DRIVER" GC_TORCH="$TORCH_VERSION" GC_PY="$PY" GC_POC="$POC" \
  GC_PARITY_BIN="$POC_PARITY_BIN" GC_BUILT="$BUILD" GC_CKPT="$CKPT" GC_SEQ="$SEQ" \
  GC_STEPS="$STEPS" GC_BATCH="$BATCH" GC_TRIED="$TRIED" GC_TARGETS="$LORA_TARGETS" \
  GC_PARITY="$PARITY_STATUS" GC_TRL_WHY="$TRL_WHY" GC_BUDGET="$BUDGET" \
  GC_SECONDS="build=$BUILD_SECONDS checkpoint=$CHECKPOINT_SECONDS parity=$PARITY_SECONDS poc=$POC_SECONDS trl=$TRL_SECONDS total=$SECONDS"
"$PY" - <<'EOF'
import json, os, re, statistics
e = os.environ
out = e["GC_OUT"]


def median(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def peak_mib(name):
    try:
        text = open(os.path.join(out, name)).read().strip()
        return int(text) if text else None
    except OSError:
        return None


# Parity: the failing tests and what they said.
parity = {"status": e["GC_PARITY"], "log": os.path.join(out, "parity.log")}
if parity["status"] != "pass":
    lines = open(parity["log"], errors="replace").read().splitlines()
    parity["failed_tests"] = [l.split()[1] for l in lines if l.startswith("test ") and l.endswith("FAILED")]
    failing, keep = [], False
    for l in lines:
        if l.startswith("---- "):
            keep = True
        elif l in ("failures:", "successes:") or l.startswith("test result:"):
            keep = False
        if keep and l.strip() and not l.startswith("note: run with"):
            failing.append(l)
    # Each failing test's output up to its backtrace, lines cut at 400 characters.
    shown, skip = [], False
    for l in failing:
        if l.startswith("---- "):
            skip = False
        elif l.startswith("stack backtrace:"):
            skip = True
        if not skip:
            shown.append(l[:400])
    parity["failing_lines"] = shown[:60] or [l[:400] for l in lines[-20:]]
    if "Tensor that doesn't have storage" in "\n".join(lines) or "undefined symbol" in "\n".join(lines):
        parity["hint"] = "the test binary looks built against another torch than the one it ran with"

batch = e["GC_BATCH"]
poc = {"status": "ok" if batch else "no batch ran",
       "tried": [l for l in e["GC_TRIED"].splitlines() if l],
       "log": os.path.join(out, "poc-run.log")}
peak = flops_per_token = None
peak_source = None
if os.environ.get("POC_PEAK_TFLOPS"):
    try:
        peak, peak_source = float(e["POC_PEAK_TFLOPS"]), "POC_PEAK_TFLOPS"
    except ValueError:
        pass
if batch:
    logs = [json.loads(l) for l in open(os.path.join(out, "poc-run", "metrics.jsonl")) if l.strip()]
    steps = [l for l in logs if "tokens_per_sec" in l]
    timed = steps[2:] or steps  # after two warm-up steps
    m = lambda k: median([s.get("metrics", {}).get(k) for s in timed])
    tps = median([s["tokens_per_sec"] for s in timed])
    tflops, mfu = m("perf/tflops"), m("perf/mfu")
    flops_per_token = median([s["metrics"]["perf/tflops"] * 1e12 / s["tokens_per_sec"]
                              for s in timed if "perf/tflops" in s.get("metrics", {}) and s["tokens_per_sec"] > 0])
    if peak is None and tflops and mfu:
        peak, peak_source = tflops / mfu, "poc's table, by the GPU's name"
    if mfu is None and peak and tflops:
        mfu = tflops / peak
    poc.update({"batch_pairs": int(batch), "tokens_per_sec": tps, "tflops": tflops, "mfu": mfu,
                "flops_per_token": flops_per_token, "peak_gpu_mib": peak_mib("poc-peak-mib"),
                "steps_logged": len(steps), "loss_first_last": [steps[0]["loss"], steps[-1]["loss"]] if steps else None})
    params = re.search(r"\(([\d.]+)M parameters\)", open(poc["log"], errors="replace").read())
    if params:
        poc["params_millions"] = float(params.group(1))

trl = None
if e["GC_TRL_WHY"]:
    trl = {"absent": e["GC_TRL_WHY"], "log": os.path.join(out, "trl.log")}
else:
    trl = json.load(open(os.path.join(out, "trl.json")))
    trl["peak_gpu_mib_torch"] = trl.pop("peak_gpu_mib", None)
    trl["peak_gpu_mib"] = peak_mib("trl-peak-mib")
    if flops_per_token and trl.get("tokens_per_sec"):
        trl["tflops"] = trl["tokens_per_sec"] * flops_per_token / 1e12
        trl["mfu"] = trl["tflops"] / peak if peak else None
    if poc.get("tokens_per_sec") and trl.get("tokens_per_sec"):
        trl["poc_speedup"] = poc["tokens_per_sec"] / trl["tokens_per_sec"]

summary = {
    "device": e["GC_DEVICE"],
    "gpu": {"name": e["GC_GPU"], "torch_name": e["GC_TORCH_GPU"] or None, "memory_total_mib": int(e["GC_GPU_MEMORY"]) if e["GC_GPU_MEMORY"].isdigit() else None,
            "driver": e["GC_GPU_DRIVER"] or None},
    "torch": e["GC_TORCH"], "python": e["GC_PY"],
    "binaries": {"poc": e["GC_POC"], "device_parity": e["GC_PARITY_BIN"], "built_here": e["GC_BUILT"] == "1"},
    "model": {"checkpoint": e["GC_CKPT"], "seq": int(e["GC_SEQ"]), "steps": int(e["GC_STEPS"]),
              "lora": {"rank": 16, "alpha": 32, "targets": e["GC_TARGETS"].split(",")}, "dtype": "bf16"},
    "peak_tflops": peak, "peak_source": peak_source,
    "parity": parity, "poc": poc, "trl": trl,
    "seconds": {k: int(v) for k, v in (kv.split("=") for kv in e["GC_SECONDS"].split())},
    "budget_seconds": int(e["GC_BUDGET"]),
}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(json.dumps(summary, indent=2))
EOF
report_rc=$?
say "summary: $OUT/summary.json"
[ "$report_rc" = 0 ] || { say "writing summary.json failed"; exit 1; }
[ "$PARITY_STATUS" = pass ] || { say "device parity: $PARITY_STATUS"; exit 1; }
[ -n "$BATCH" ] || exit 1
exit 0
