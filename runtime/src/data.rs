//! Tokenizers and preference data: HF `tokenizer.json` through the `tokenizers` crate (and the
//! byte-level tokenizer of the embedded `tiny` model), TRL's preference JSONL (plain strings or
//! conversational message lists rendered with the model's own chat template, or the Llama-3 one
//! for a model without one), tokenized as TRL's DPOTrainer does, and padded, length-bucketed
//! batches.

pub mod chat;
pub mod pairs;
pub mod synthetic;
pub mod tokenizer;
pub mod world;

pub use pairs::{Batch, Pair, Tokenized, batch_of, batches, load_pairs, parse_pairs};
pub use tokenizer::{BOS, EOS, PAD, Tok, tiny_tokenizer_json, tiny_vocab_size};

use std::path::PathBuf;

/// A data problem, naming the file (and, for a row, the line).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `tokenizer.json` could not be loaded.
    #[error("{}: not a usable tokenizer.json: {message}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// A model's chat template (or the `tokenizer_config.json` holding it) is unusable.
    #[error("{}: not a usable chat template: {message}", path.display())]
    ChatTemplate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A bad row under `strict`, or no usable row at all; the message names file and line.
    #[error("{0}")]
    BadRows(String),
}
