"""PyTorch baseline for `poc bench train`: DPO training steps of a Llama (transformers'
LlamaForCausalLM, random init) with a frozen reference, on CPU, f32 — the same shape, batch
and data as poc's side. Prints one JSON line: tokens/s (median over timed steps) and peak RSS.

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
                      ("vocab", 264), ("pairs", 8), ("seq", 128), ("prompt", 16), ("steps", 8), ("warmup", 2)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--beta", type=float, default=0.1)
p.add_argument("--lr", type=float, default=1e-4)
a = p.parse_args()

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.inter,
                  num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                  max_position_embeddings=max(512, a.seq), tie_word_embeddings=True, attn_implementation="sdpa")
policy = LlamaForCausalLM(cfg).train()
ref = LlamaForCausalLM(cfg).eval()
ref.load_state_dict(policy.state_dict())
for q in ref.parameters():
    q.requires_grad_(False)
opt = torch.optim.AdamW(policy.parameters(), lr=a.lr, weight_decay=0.0, eps=1e-8)

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
        rp = seq_logps(ref, ids)
    z = a.beta * ((lp[:B] - rp[:B]) - (lp[B:] - rp[B:]))
    loss = -F.logsigmoid(z).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    if step >= a.warmup:
        times.append(time.perf_counter() - t0)
print(json.dumps({"tokens_per_sec": 2 * B * T / statistics.median(times),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
