"""Tiny random models of every architecture poc implements, built and scored by transformers,
for the parity tests of runtime/tests/arch_parity.rs.

  python scripts/arch_parity.py make OUT       one directory per case under OUT: config.json,
                                               model.safetensors (f32), expected.json, and
                                               reward/ (the *ForSequenceClassification twin)
  python scripts/arch_parity.py score DIR ROWS  log-probs of ROWS (a JSON file: tokens,
                                               completion starts) under the checkpoint DIR,
                                               as a JSON list (poc's saved checkpoints reload)
  python scripts/arch_parity.py lora DIR ADAPTER ROWS
                                               one DPO step (as `make`'s) of the checkpoint
                                               DIR with the PEFT adapters poc wrote in ADAPTER:
                                               loss and the adapters' gradient norm, as JSON

Every norm weight and bias is perturbed away from its initialization (and weights drawn wider
than transformers' default), so a dropped or misplaced term changes the numbers; sliding windows
are shorter than the rows, soft-caps small enough to bite. Computed in float32 with eager
attention (transformers' reference path). Deterministic for a given transformers version.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def cases():
    """(name, config class, causal-LM class, reward class, config kwargs)."""
    t = transformers
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    return [
        ("llama", t.LlamaConfig, t.LlamaForCausalLM, t.LlamaForSequenceClassification,
         dict(rope_scaling=llama3, rope_theta=500000.0, tie_word_embeddings=False)),
        ("llama-bias-gelu", t.LlamaConfig, t.LlamaForCausalLM, t.LlamaForSequenceClassification,
         dict(attention_bias=True, mlp_bias=True, hidden_act="gelu_new", tie_word_embeddings=True)),
        ("mistral", t.MistralConfig, t.MistralForCausalLM, t.MistralForSequenceClassification,
         dict(sliding_window=5, head_dim=16)),
        ("qwen2", t.Qwen2Config, t.Qwen2ForCausalLM, t.Qwen2ForSequenceClassification,
         dict(tie_word_embeddings=True, rope_theta=1000000.0)),
        ("qwen2-sliding", t.Qwen2Config, t.Qwen2ForCausalLM, t.Qwen2ForSequenceClassification,
         dict(use_sliding_window=True, sliding_window=5, max_window_layers=1)),
        ("qwen3", t.Qwen3Config, t.Qwen3ForCausalLM, t.Qwen3ForSequenceClassification,
         dict(head_dim=24, tie_word_embeddings=True)),
        ("gemma2", t.Gemma2Config, t.Gemma2ForCausalLM, t.Gemma2ForSequenceClassification,
         dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
              attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
        ("gemma3", t.Gemma3TextConfig, t.Gemma3ForCausalLM, t.Gemma3TextForSequenceClassification,
         dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=5, sliding_window_pattern=2,
              rope_local_base_freq=100.0, rope_theta=10000.0,
              rope_scaling={"rope_type": "linear", "factor": 2.0})),
        ("phi3", t.Phi3Config, t.Phi3ForCausalLM, t.Phi3ForSequenceClassification,
         dict(sliding_window=7)),
    ]


def perturb(model, seed):
    """Norms and biases away from their initialization (ones, zeros, Gemma's zero offsets)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def rows(seed):
    """Right-padded token rows (no pad id inside), lengths past the sliding windows."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for length, start in [(14, 5), (9, 3), (17, 8), (6, 2)]:
        toks = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        out.append({"tokens": toks, "completion_start": start})
    return out


def logps(model, rs):
    """Σ log p(token j | tokens < j) over each row's completion (j ≥ completion_start)."""
    width = max(len(r["tokens"]) for r in rs)
    ids = torch.tensor([r["tokens"] + [0] * (width - len(r["tokens"])) for r in rs])
    mask = torch.tensor([[1] * len(r["tokens"]) + [0] * (width - len(r["tokens"])) for r in rs])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    lp = torch.log_softmax(logits, dim=-1)
    out = []
    for b, r in enumerate(rs):
        s = 0.0
        for j in range(r["completion_start"], len(r["tokens"])):
            s += lp[b, j - 1, r["tokens"][j]].item()
        out.append(s)
    return out


def dpo_step(model, rs, params=None):
    """One DPO step's loss and global gradient norm (β = 0.1) on the pairs (row 0 over row 1,
    row 2 over row 3) against constant reference log-probs: what poc's full fine-tune computes
    before its optimizer step."""
    beta, ref = 0.1, [-40.0, -30.0, -38.0, -22.0]
    width = max(len(r["tokens"]) for r in rs)
    ids = torch.tensor([r["tokens"] + [0] * (width - len(r["tokens"])) for r in rs])
    mask = torch.tensor([[1] * len(r["tokens"]) + [0] * (width - len(r["tokens"])) for r in rs])
    model.zero_grad()
    lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    seq = []
    for b, r in enumerate(rs):
        seq.append(sum(lp[b, j - 1, r["tokens"][j]] for j in range(r["completion_start"], len(r["tokens"]))))
    losses = []
    for c, r in [(0, 1), (2, 3)]:
        delta = (seq[c] - ref[c]) - (seq[r] - ref[r])
        losses.append(-torch.nn.functional.logsigmoid(beta * delta))
    loss = torch.stack(losses).mean()
    loss.backward()
    params = list(model.parameters()) if params is None else params
    sq = sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None)
    return {"beta": beta, "ref": ref, "loss": loss.item(), "grad_norm": sq ** 0.5}


def load(path, cls=AutoModelForCausalLM):
    return cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def make(out):
    torch.manual_seed(0)
    for k, (name, cfg_cls, lm_cls, rm_cls, extra) in enumerate(cases()):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        cfg = cfg_cls(**{**COMMON, **extra})
        cfg._attn_implementation = "eager"
        torch.manual_seed(100 + k)
        model = lm_cls(cfg).eval()
        perturb(model, 200 + k)
        model.save_pretrained(d, safe_serialization=True)
        model = load(d)
        rs = rows(300 + k)
        prompts = [r["tokens"][: r["completion_start"]] for r in rs[:2]]
        greedy = []
        for p in prompts:
            with torch.no_grad():
                g = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                   max_new_tokens=8, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)
            greedy.append(g[0, len(p):].tolist())
        # The reward-model twin: same decoder, a one-label score head.
        rcfg = cfg_cls(**{**COMMON, **extra, "num_labels": 1})
        rcfg._attn_implementation = "eager"
        torch.manual_seed(400 + k)
        rm = rm_cls(rcfg).eval()
        perturb(rm, 500 + k)
        rd = os.path.join(d, "reward")
        rm.save_pretrained(rd, safe_serialization=True)
        rm = load(rd, rm_cls)
        width = max(len(r["tokens"]) for r in rs)
        ids = torch.tensor([r["tokens"] + [0] * (width - len(r["tokens"])) for r in rs])
        mask = (ids != 0).long()
        with torch.no_grad():
            rewards = rm(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()
        expected = {"transformers": transformers.__version__, "rows": rs,
                    "logps": logps(model, rs), "prompts": prompts, "greedy": greedy,
                    "rewards": rewards, "dpo": dpo_step(model, rs)}
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(expected, f)


def score(model_dir, rows_file):
    with open(rows_file) as f:
        rs = json.load(f)
    print(json.dumps(logps(load(model_dir), rs)))


def lora(model_dir, adapter_dir, rows_file):
    from peft import PeftModel
    with open(rows_file) as f:
        rs = json.load(f)
    model = PeftModel.from_pretrained(load(model_dir), adapter_dir, is_trainable=True)
    trained = [p for n, p in model.named_parameters() if "lora_" in n]
    print(json.dumps(dpo_step(model, rs, trained)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "lora":
        lora(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
