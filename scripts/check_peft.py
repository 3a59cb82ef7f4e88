"""Checks that a LoRA checkpoint written by `poc run --lora` loads in PEFT.

Usage: python scripts/check_peft.py BASE_DIR CHECKPOINT_DIR

Loads the base model with transformers, attaches the checkpoint's adapters with
peft.PeftModel.from_pretrained (adapter_config.json + adapter_model.safetensors), and
compares its logits with those of the checkpoint's merged model.safetensors. Prints the
differences as JSON; exits 1 when the adapters are missing or disagree with the merge.
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import LlamaForCausalLM


def main() -> int:
    base_dir, ckpt = sys.argv[1], sys.argv[2]
    ids = torch.tensor([[1, 5, 17, 33, 2, 9, 40, 41, 7, 3]])
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits
    adapted = PeftModel.from_pretrained(base, ckpt)
    merged = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    with torch.no_grad():
        peft_logits = adapted(ids).logits
        merged_logits = merged(ids).logits
    report = {
        "peft_vs_merged": (peft_logits - merged_logits).abs().max().item(),
        "peft_vs_base": (peft_logits - base_logits).abs().max().item(),
    }
    print(json.dumps(report))
    ok = report["peft_vs_merged"] < 1e-4 and report["peft_vs_base"] > 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
