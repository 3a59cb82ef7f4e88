"""Checks that a LoRA checkpoint written by `poc run --lora` loads in PEFT.

Usage: python scripts/check_peft.py BASE_DIR CHECKPOINT_DIR

Loads the base model with transformers, attaches the checkpoint's adapters with
peft.PeftModel.from_pretrained (CHECKPOINT_DIR/adapter: adapter_config.json +
adapter_model.safetensors), and
compares its outputs with those of the checkpoint's merged model.safetensors: logits of a
LlamaForCausalLM, or, for a reward model (PEFT task SEQ_CLS, whose trained `score` head is
saved with the adapters), rewards of a LlamaForSequenceClassification. Prints the
differences as JSON; exits 1 when the adapters are missing or disagree with the merge.
"""
import json
import os
import sys

import torch
from peft import PeftModel
from transformers import LlamaForCausalLM, LlamaForSequenceClassification


def main() -> int:
    base_dir, ckpt = sys.argv[1], sys.argv[2]
    adapter = os.path.join(ckpt, "adapter")
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        task = json.load(f).get("task_type")
    cls = LlamaForSequenceClassification if task == "SEQ_CLS" else LlamaForCausalLM
    extra = {"num_labels": 1} if task == "SEQ_CLS" else {}
    ids = torch.tensor([[1, 5, 17, 33, 2, 9, 40, 41, 7, 3]])
    torch.manual_seed(0)
    base = cls.from_pretrained(base_dir, dtype=torch.float32, **extra)
    with torch.no_grad():
        base_out = base(ids).logits
    adapted = PeftModel.from_pretrained(base, adapter)
    merged = cls.from_pretrained(ckpt, dtype=torch.float32)
    with torch.no_grad():
        peft_out = adapted(ids).logits
        merged_out = merged(ids).logits
    report = {
        "task": task,
        "peft_vs_merged": (peft_out - merged_out).abs().max().item(),
        "peft_vs_base": (peft_out - base_out).abs().max().item(),
    }
    print(json.dumps(report))
    ok = report["peft_vs_merged"] < 1e-4 and report["peft_vs_base"] > 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
