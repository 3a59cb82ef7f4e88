"""Scores token rows with transformers' LlamaForSequenceClassification, to check that a
reward model written by poc loads there and pools the same token.

Usage: python scripts/check_reward_model.py MODEL_DIR ROWS_JSON
ROWS_JSON is a list of token-id lists (unpadded). Pads them on the right with the config's
pad_token_id, runs the model and prints the rewards as a JSON list.
"""
import json
import sys

import torch
from transformers import LlamaForSequenceClassification


def main() -> int:
    model_dir, rows = sys.argv[1], json.loads(sys.argv[2])
    model = LlamaForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    pad = model.config.pad_token_id
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    print(json.dumps(rewards.tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
