//! Tokenizers and preference data: HF `tokenizer.json` through the `tokenizers` crate (and the
//! byte-level tokenizer of the embedded `tiny` model), TRL's preference JSONL (plain strings or
//! conversational message lists rendered with the Llama-3 chat template), tokenized as TRL's
//! DPOTrainer does, and padded, length-bucketed batches.

pub mod pairs;
pub mod synthetic;
pub mod tokenizer;

pub use pairs::{Batch, DataError, Pair, Tokenized, batches, load_pairs};
pub use tokenizer::{BOS, EOS, PAD, Tok, tiny_tokenizer_json, tiny_vocab_size};
