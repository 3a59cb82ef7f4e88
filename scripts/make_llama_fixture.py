"""Makes runtime/tests/fixtures/tiny-llama, a tiny Llama-3 checkpoint in Hugging Face layout,
and the numbers `transformers` computes for it, so that poc's Rust implementation can be
checked against the reference one:

  config.json, generation_config.json   Llama-3 rope scaling, GQA, untied head, eos list
  model.safetensors                     bf16 weights (as published Llama checkpoints are)
  tokenizer.json, tokenizer_config.json a Llama-3-style tokenizer: the Llama-3 split regex,
                                        byte-level BPE with a few merges, Llama-3 special
                                        tokens, BOS post-processor, the Llama-3 chat template
  expected.json                         preference rows, their TRL-style tokenization, and
                                        logits / completion log-probs / entropies of the
                                        model on them (computed in float32)

The Rust tests (runtime/tests/model_hf.rs, runtime/tests/data_hf.rs) read the same files.
Deterministic: rerunning rewrites identical files. Needs the venv of scripts/setup.sh:
    ~/.cache/poc/torch-2.9.0/bin/pip install transformers==4.57.1
    ~/.cache/poc/torch-2.9.0/bin/python scripts/make_llama_fixture.py
"""
import copy
import json
import os

import tokenizers
import torch
import transformers
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runtime", "tests",
                   "fixtures", "tiny-llama")

# The pre-tokenizer regex of Meta-Llama-3's tokenizer.json (needs look-ahead: fancy-regex).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Meta-Llama-3-8B-Instruct's chat template.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<|finetune_right_pad_id|>"]
CORPUS = [
    "The cat is kind. The dog is calm. The owl is wise and the fox is clever.",
    "Hello! How are you today? I'm fine, thanks. What's the weather like?",
    "The quick brown fox jumps over the lazy dog 123 times in 2024.",
    "user assistant system\n\nYou are a helpful assistant.",
] * 20
N_MERGES = 50

# Preference rows as TRL reads them: plain text, one whose prompt ends in a space (so the
# prompt's last token merges with the completion's first), and conversational ones.
ROWS = [
    {"prompt": "The cat is", "chosen": " kind and calm.", "rejected": " rude.",
     "score_chosen": 8.5, "score_rejected": 2},
    {"prompt": "The owl is ", "chosen": "wise.", "rejected": "lazy, 123!"},
    {"prompt": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "  Hello! How are you?"}],
     "chosen": [{"role": "assistant", "content": "I'm fine, thanks. "}],
     "rejected": [{"role": "assistant", "content": "Go away."}]},
]


def build_tokenizer():
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + N_MERGES, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(SPECIALS)
    bos = tok.token_to_id(SPECIALS[0])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{SPECIALS[0]} $A", pair=f"{SPECIALS[0]} $A {SPECIALS[0]}:1 $B:1",
            special_tokens=[(SPECIALS[0], bos)]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
        pad_token=SPECIALS[5], chat_template=LLAMA3_CHAT_TEMPLATE)


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_row(tok, row):
    """TRL (DPOTrainer, `build_tokenized_answer`) tokenization: the prompt and the prompt
    plus the completion are encoded, the completion starts where they diverge; plain-text
    completions get EOS; conversational rows are rendered with the chat template first
    (prompt with the generation prompt; the completion is the rest of the whole
    conversation), and the template's text already carries BOS."""
    out, chat = {}, None
    plain = isinstance(row["prompt"], str)
    if plain:
        prompt = row["prompt"]
    else:
        prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                         tokenize=False)
        chat = {"prompt": prompt}
    for side in ("chosen", "rejected"):
        if plain:
            completion = row[side]
        else:
            whole = tok.apply_chat_template(row["prompt"] + row[side], tokenize=False)
            assert whole.startswith(prompt)
            completion = whole[len(prompt):]
            chat[side] = completion
        p = tok(prompt, add_special_tokens=plain)["input_ids"]
        ids = tok(prompt + completion, add_special_tokens=plain)["input_ids"]
        if plain:
            ids = ids + [tok.eos_token_id]
        out[side] = {"ids": ids, "completion_start": common_prefix(p, ids)}
    return out, chat


def rounded(x):
    return [rounded(v) for v in x] if isinstance(x, list) else round(x, 5)


def observables(model, tokens, lengths, starts):
    ids = torch.tensor(tokens)
    t = ids.shape[1]
    mask = torch.tensor([[1 if j < n else 0 for j in range(t)] for n in lengths])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok_logp = logp.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    # Position j predicts token j + 1; it counts when token j + 1 is a completion token.
    cm = torch.tensor([[1.0 if s <= j + 1 < n else 0.0 for j in range(t - 1)]
                       for n, s in zip(lengths, starts)])
    ent = -(logp.exp() * logp).sum(-1)
    return logits, (tok_logp * cm).sum(1), cm.sum(1), (ent * cm).sum(1) / cm.sum(1)


def main():
    torch.manual_seed(0)
    tok = build_tokenizer()
    vocab = (len(tok) + 7) // 8 * 8
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS}
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
        # With head_dim 16 and theta 1e4 the wavelengths straddle 64/4 and 64/1, so every
        # branch of the Llama-3 frequency rule is used.
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        max_position_embeddings=512, tie_word_embeddings=False,
        # Wider than Llama's 0.02 so that attention is far from uniform and the next-token
        # distributions are peaked: a wrong mask, RoPE or head layout changes the numbers.
        initializer_range=0.15,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]],
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # Norm weights are ones at init; perturb them so a wrong norm implementation shows.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
        # Published checkpoints are bf16: round the weights to bf16 values, store them as
        # bf16, and compute the expectations in float32 from exactly those values. (Not
        # `model.to(bfloat16).float()`: that would also round the RoPE frequency buffer,
        # which a float32 load of the checkpoint computes afresh.)
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    os.makedirs(OUT, exist_ok=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(OUT, safe_serialization=True)
    tok.save_pretrained(OUT)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(OUT, extra)):
            os.remove(os.path.join(OUT, extra))

    tokenized, chats = [], []
    for row in ROWS:
        t, chat = tokenize_row(tok, row)
        tokenized.append(t)
        chats.append(chat)
    # One batch laid out as poc's batch_of lays it out: every chosen row, then every rejected
    # row, right-padded with <|finetune_right_pad_id|>.
    seqs = [t["chosen"] for t in tokenized] + [t["rejected"] for t in tokenized]
    width = max(len(s["ids"]) for s in seqs)
    tokens = [s["ids"] + [ids["<|finetune_right_pad_id|>"]] * (width - len(s["ids"]))
              for s in seqs]
    lengths = [len(s["ids"]) for s in seqs]
    starts = [s["completion_start"] for s in seqs]
    logits, logps, counts, entropy = observables(model, tokens, lengths, starts)
    # The checkpoint as a user would load it gives the same numbers.
    reloaded = LlamaForCausalLM.from_pretrained(OUT, dtype=torch.float32).eval()
    assert torch.equal(observables(reloaded, tokens, lengths, starts)[0], logits)

    # The same weights with the output head tied to the embedding.
    tied_config = LlamaConfig.from_dict({**config.to_dict(), "tie_word_embeddings": True})
    tied = LlamaForCausalLM(tied_config).eval()
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    tied.load_state_dict(state, strict=False)
    tied_logits, tied_logps, _, _ = observables(tied, tokens, lengths, starts)

    # Llama-3.1-8B's RoPE inverse frequencies (head_dim 128, theta 5e5, llama3 factor 8), the
    # published configuration poc's preset must reproduce.
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    llama31 = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
                          max_position_embeddings=131072,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8192})
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](llama31, "cpu")

    texts = ["Hello world!", "The owl is  wise.\n\nOK", "It's 2024: café, naïve 😀.",
             "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"]
    expected = {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__,
        "encode": [{"text": s, "ids": tok(s)["input_ids"]} for s in texts],
        "rows": ROWS,
        "tokenized": tokenized,
        "chat": chats,
        "tokens": tokens,
        "lengths": lengths,
        "completion_start": starts,
        # Logits of the real (unpadded) positions only: padded positions are undefined.
        "logits": rounded([logits[b, :n].tolist() for b, n in enumerate(lengths)]),
        "completion_logps": logps.tolist(),
        "completion_tokens": counts.tolist(),
        "mean_entropy": entropy.tolist(),
        "llama3.1_inv_freq": inv_freq.tolist(),
        "tied": {
            "last_logits": rounded([tied_logits[b, n - 1].tolist()
                                    for b, n in enumerate(lengths)]),
            "completion_logps": tied_logps.tolist(),
        },
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
    print("wrote", os.path.normpath(OUT), "vocab", vocab, "batch", len(tokens), "x", width)


if __name__ == "__main__":
    main()
