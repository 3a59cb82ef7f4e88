"""PyTorch baseline for `poc bench train`: DPO training steps of a Llama (transformers'
LlamaForCausalLM, random init, SDPA attention) with a frozen reference, on CPU, f32 — or with
`--bf16 1` a bf16 model, and with `--lora R` PEFT adapters on every linear layer and the base as
the reference — the same shape, batch and data as poc's side. With `--config FILE` (a
config.json of any family poc implements: Qwen2, Qwen3, Gemma 2, Mistral, ...) the model is that
family's, built by transformers' Auto classes. Prints one JSON line: tokens/s (median over timed
steps) and peak RSS.

Usage: python bench/dpo_step.py --hidden 256 --layers 4 --heads 8 --kv-heads 4 --inter 704
                                --vocab 264 --pairs 8 --seq 128 --steps 8 --warmup 2
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
for name, default in [("hidden", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4), ("inter", 704),
                      ("vocab", 264), ("tied", 1), ("pairs", 8), ("seq", 128), ("prompt", 16), ("steps", 8),
                      ("warmup", 2), ("lora", 0), ("bf16", 0)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--beta", type=float, default=0.1)
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--config", default=None)
a = p.parse_args()

from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig  # noqa: E402

torch.manual_seed(0)
if a.config:
    with open(a.config) as f:
        d = json.load(f)
    for k in ("architectures", "dtype", "torch_dtype", "transformers_version"):
        d.pop(k, None)
    # poc writes unset optional fields as null; transformers wants them absent (head_dim).
    d = {k: v for k, v in d.items() if v is not None}
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    # Soft-capped attention (Gemma 2) has no SDPA path in transformers.
    cfg._attn_implementation = "eager" if getattr(cfg, "attn_logit_softcapping", None) else "sdpa"
else:
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.inter,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(512, a.seq), tie_word_embeddings=bool(a.tied),
                      attn_implementation="sdpa")
if a.bf16:
    # A bf16 model, built in bf16 (never whole in f32), as `torch_dtype=torch.bfloat16` loads one.
    torch.set_default_dtype(torch.bfloat16)
policy = AutoModelForCausalLM.from_config(cfg).train()
torch.set_default_dtype(torch.float32)
if a.lora:
    # PEFT on every linear layer; its adapters in f32 (autocast_adapter_dtype); the reference is
    # the base with the adapters disabled, as TRL does with a PEFT model.
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(policy, LoraConfig(r=a.lora, lora_alpha=2 * a.lora, target_modules="all-linear"))
    ref = None
else:
    ref = AutoModelForCausalLM.from_config(cfg).eval().to(next(policy.parameters()).dtype)
    ref.load_state_dict(policy.state_dict())
    for q in ref.parameters():
        q.requires_grad_(False)
opt = torch.optim.AdamW([q for q in policy.parameters() if q.requires_grad], lr=a.lr, weight_decay=0.0, eps=1e-8)

B, T = a.pairs, a.seq
ids = torch.randint(0, a.vocab, (2 * B, T))
mask = torch.ones(2 * B, T, dtype=torch.long)
comp = torch.zeros(2 * B, T - 1)
comp[:, a.prompt - 1:] = 1.0


def seq_logps(model, ids):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (logp * comp).sum(1)


times = []
for step in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    lp = seq_logps(policy, ids)
    with torch.no_grad():
        if ref is None:
            with policy.disable_adapter():
                rp = seq_logps(policy, ids)
        else:
            rp = seq_logps(ref, ids)
    z = a.beta * ((lp[:B] - rp[:B]) - (lp[B:] - rp[B:]))
    loss = -F.logsigmoid(z).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([q for q in policy.parameters() if q.requires_grad], 1.0)
    opt.step()
    if step >= a.warmup:
        times.append(time.perf_counter() - t0)
print(json.dumps({"tokens_per_sec": 2 * B * T / statistics.median(times),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
