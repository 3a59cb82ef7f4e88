"""TRL's side of scripts/gpu-check.sh: DPOTrainer + PEFT LoRA (r=16, all linear layers) on a
random-init Llama of a poc preset's shape, bf16 weights, SDPA attention, the same pairs, batch
and length as poc's run. Prints one JSON object: median tokens/s over the steps after the first
two (2 x batch x seq tokens per step), and torch's peak reserved GPU memory (scripts/gpu-check.sh
replaces it with the device's used memory sampled as for poc, CUDA context included).

Needs trl, peft and datasets (tested: trl 0.24.0, peft 0.17.1, datasets 4.4 with transformers
4.57.1; installing trl alone may upgrade transformers past what peft 0.17 imports).

Usage: python bench/trl_dpo.py --model llama3-8b --seq 2048 --batch 4 --steps 20 \
                               --data pairs.jsonl --device cuda
"""
import argparse
import json
import statistics
import time

import torch
from datasets import load_dataset
from peft import LoraConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from trl import DPOConfig, DPOTrainer

SHAPES = {  # the presets' shapes (runtime/src/model/config.rs)
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                      rope_theta=500000.0, tie_word_embeddings=False),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                        rope_theta=500000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=264, rope_theta=10000.0, tie_word_embeddings=True),
}

p = argparse.ArgumentParser()
p.add_argument("--model", default="llama3-8b", choices=sorted(SHAPES))
p.add_argument("--seq", type=int, default=2048)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--data", required=True)
p.add_argument("--device", default="cuda")
a = p.parse_args()

# A character-level tokenizer over the data's alphabet (poc's presets read bytes): one token per
# character, as on poc's side.
chars = "abcdefghijklmnopqrstuvwxyz "
vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", bos_token="<s>")

torch.manual_seed(0)
cfg = LlamaConfig(**SHAPES[a.model], max_position_embeddings=max(8192, a.seq), attn_implementation="sdpa",
                  torch_dtype="bfloat16")
model = LlamaForCausalLM(cfg).to(dtype=torch.bfloat16, device=a.device)

times = []


class Timer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if a.device == "cuda":
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if a.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - self.t0)


args = DPOConfig(output_dir="/tmp/trl-dpo-check", per_device_train_batch_size=a.batch, max_steps=a.steps,
                 max_length=a.seq, bf16=a.device == "cuda", learning_rate=1e-5, logging_steps=1,
                 report_to=[], save_strategy="no", use_cpu=a.device == "cpu", gradient_checkpointing=False,
                 dataloader_num_workers=0, remove_unused_columns=False)
trainer = DPOTrainer(model=model, args=args, train_dataset=load_dataset("json", data_files=a.data, split="train"),
                     processing_class=tok, peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                                  task_type="CAUSAL_LM"),
                     callbacks=[Timer()])
trainer.train()
tokens_per_step = 2 * a.batch * a.seq
rates = [tokens_per_step / t for t in (times[2:] or times)]
peak = torch.cuda.max_memory_reserved() / 2**20 if a.device == "cuda" else float("nan")
print(json.dumps({"tokens_per_sec": statistics.median(rates), "peak_gpu_mib": peak,
                  "torch": torch.__version__, "batch_pairs": a.batch, "seq": a.seq}))
