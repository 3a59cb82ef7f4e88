"""TRL's side of scripts/gpu-check.sh: DPOTrainer + PEFT LoRA on the checkpoint poc trains (a
transformers model directory with its tokenizer.json), with the same pairs, batch, length, steps
and LoRA settings (rank 16, alpha 32, no dropout, the targets given: poc's q,k,v,o_proj by
default), bf16 weights, SDPA attention, the reference being the model with its adapters off (as
in poc's LoRA runs).

Writes one JSON object to --json: the median tokens/s over the steps after the first two
(2 x batch x seq tokens per step: the data fills every sequence to --seq), the step times, torch's
peak reserved GPU memory (scripts/gpu-check.sh reports beside it the device's used memory
sampled as for poc, CUDA context included), the trained parameter count and the versions.

Needs torch, transformers, peft, trl and datasets. Written against TRL's DPOConfig of 0.2x
(fields it does not have are left out, so newer and older TRL run it too).

Usage: python bench/trl_dpo.py --model-dir DIR --seq 2048 --batch 1 --steps 20 \
                               --data pairs.jsonl --device cuda --json trl.json
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import transformers
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
import peft
import trl
from trl import DPOConfig, DPOTrainer

p = argparse.ArgumentParser()
p.add_argument("--model-dir", required=True, help="config.json, *.safetensors and tokenizer.json")
p.add_argument("--seq", type=int, default=2048)
p.add_argument("--batch", type=int, default=1, help="pairs per step")
p.add_argument("--steps", type=int, default=20)
p.add_argument("--data", required=True, help="JSON lines with prompt, chosen, rejected")
p.add_argument("--device", default="cuda")
p.add_argument("--lora-rank", type=int, default=16)
p.add_argument("--lora-alpha", type=float, default=32)
p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
p.add_argument("--json", required=True, help="where the result goes")
a = p.parse_args()
cuda = a.device.startswith("cuda")

# The checkpoint's own tokenizer (poc's byte-level one): the same token ids as poc's run.
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model_dir, "tokenizer.json"),
                              bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                              pad_token="<|finetune_right_pad_id|>")

started = time.perf_counter()
load = dict(attn_implementation="sdpa")
# transformers >= 4.56 names it `dtype`, older ones `torch_dtype`.
dtype_key = "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"
load[dtype_key] = torch.bfloat16
try:
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, device_map=a.device, **load)
except (ImportError, ValueError, TypeError) as e:  # no accelerate for device_map
    print(f"loading with device_map failed ({e}); loading then moving", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, **load).to(a.device)
load_seconds = time.perf_counter() - started

rows = [json.loads(line) for line in open(a.data) if line.strip()]
dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])

times = []


class Timer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if cuda:
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - self.t0)


# Only the fields this TRL's DPOConfig has.
wanted = dict(output_dir=tempfile.mkdtemp(prefix="trl-dpo-check-"), per_device_train_batch_size=a.batch,
              gradient_accumulation_steps=1, max_steps=a.steps, max_length=a.seq,
              max_prompt_length=a.seq, bf16=cuda, learning_rate=1e-5, lr_scheduler_type="constant",
              beta=0.1, logging_steps=10, report_to="none", save_strategy="no", use_cpu=not cuda,
              dataloader_num_workers=0, remove_unused_columns=False,
              precompute_ref_log_probs=False, seed=42)
fields = {f.name for f in dataclasses.fields(DPOConfig)}
dropped = sorted(set(wanted) - fields)
if dropped:
    print(f"this TRL's DPOConfig has no {', '.join(dropped)}: left out", file=sys.stderr)
args = DPOConfig(**{k: v for k, v in wanted.items() if k in fields})
targets = [t.strip() for t in a.lora_targets.split(",") if t.strip()]
lora = LoraConfig(r=a.lora_rank, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules=targets,
                  task_type="CAUSAL_LM")
trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora,
                     callbacks=[Timer()])
trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
if cuda:
    torch.cuda.reset_peak_memory_stats()
trainer.train()

tokens_per_step = 2 * a.batch * a.seq
timed = times[2:] or times
result = {
    "tokens_per_sec": tokens_per_step / statistics.median(timed) if timed else None,
    "step_seconds": [round(t, 4) for t in times],
    "peak_gpu_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
    "load_seconds": round(load_seconds, 1),
    "batch_pairs": a.batch,
    "seq": a.seq,
    "lora": {"rank": a.lora_rank, "alpha": a.lora_alpha, "targets": targets},
    "trained_params": trained,
    "config_left_out": dropped,
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                 "trl": trl.__version__},
}
with open(a.json, "w") as f:
    json.dump(result, f, indent=2)
print(json.dumps(result))
