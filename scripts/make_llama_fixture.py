"""Makes runtime/tests/fixtures/tiny-llama: a tiny random LlamaForCausalLM in HF layout
(config.json with Llama-3 rope_scaling, model.safetensors) and expected.json with the logits
and completion log-probs that `transformers` computes for fixed token ids. The Rust test
(runtime/tests/model_hf.rs) loads the same files with poc and compares.

Run with the venv of scripts/setup.sh plus transformers:
    ~/.cache/poc/torch-2.9.0/bin/pip install transformers==4.57.1
    ~/.cache/poc/torch-2.9.0/bin/python scripts/make_llama_fixture.py
"""
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "runtime", "tests", "fixtures", "tiny-llama")

torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=264,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    max_position_embeddings=512,
    tie_word_embeddings=False,
    bos_token_id=256,
    eos_token_id=257,
)
model = LlamaForCausalLM(config).eval()
# Norm weights are ones at init; perturb them so a wrong norm implementation shows.
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:
            p.add_(0.1 * torch.randn_like(p))
os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)

tokens = [
    [256, 84, 104, 101, 32, 99, 97, 116, 32, 105, 115, 32, 107, 105, 110, 100, 46, 257],
    [256, 84, 104, 101, 32, 111, 119, 108, 32, 105, 115, 32, 114, 117, 100, 101, 46, 257],
    [256, 72, 105, 33, 257, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261],
]
lengths = [18, 18, 5]
completion_start = [11, 11, 3]
ids = torch.tensor(tokens)
mask = torch.tensor([[1 if j < n else 0 for j in range(len(tokens[0]))] for n in lengths])
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
logp = torch.log_softmax(logits[:, :-1], dim=-1)
tok_logp = logp.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
cm = torch.tensor([[1.0 if completion_start[b] <= j + 1 < lengths[b] else 0.0 for j in range(len(tokens[0]) - 1)]
                   for b in range(len(tokens))])
seq_logps = (tok_logp * cm).sum(1)
ent = -(logp.exp() * logp).sum(-1)
mean_ent = (ent * cm).sum(1) / cm.sum(1)
expected = {
    "tokens": tokens,
    "lengths": lengths,
    "completion_start": completion_start,
    # Logits of the real (unpadded) positions only: padded positions are undefined.
    "logits": [logits[b, :lengths[b]].tolist() for b in range(len(tokens))],
    "completion_logps": seq_logps.tolist(),
    "completion_tokens": cm.sum(1).tolist(),
    "mean_entropy": mean_ent.tolist(),
    "transformers": __import__("transformers").__version__,
    "torch": torch.__version__,
}
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f)
print("wrote", OUT)
