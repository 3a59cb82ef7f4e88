//! Tokenizers and preference data: HF `tokenizer.json` through the `tokenizers` crate (and the
//! byte-level tokenizer of the embedded `tiny` model), TRL's preference JSONL (plain strings or
//! conversational message lists rendered with the model's own chat template, or the Llama-3 one
//! for a model without one), tokenized as TRL's DPOTrainer does, and padded, length-bucketed
//! batches. Rows come from JSON lines, JSON, Parquet, a directory or a Hub dataset id through
//! [`rows`].

pub mod chat;
pub mod pairs;
pub mod rows;
pub mod synthetic;
pub mod tokenizer;
pub mod world;

pub use pairs::{
    Batch, Pair, Tokenized, batch_of, batches, load_pairs, load_pairs_reading, load_pairs_split,
    parse_pairs,
};
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
    /// A Parquet file could not be read.
    #[error("{}: not a readable Parquet file: {message}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// A data directory has no files for the split.
    #[error(
        "{}: no data files for split `{split}`{}\n  = hint: pass --split with one of the splits found; a split's files are `data/{split}-00000-of-0000N.parquet`, `{split}/*.parquet` or `{split}.jsonl`-like names (.parquet, .jsonl, .json)",
        dir.display(),
        if available.is_empty() { " (it holds no .parquet, .jsonl or .json files)".to_string() } else { format!(" (splits found: {})", available.join(", ")) }
    )]
    NoSplit {
        /// The directory.
        dir: PathBuf,
        /// The split asked for.
        split: String,
        /// The splits its files hold.
        available: Vec<String>,
    },
    /// A Hub dataset id could not be resolved.
    #[error(transparent)]
    Hub(Box<crate::hub::HubError>),
}

impl From<crate::hub::HubError> for DataError {
    fn from(e: crate::hub::HubError) -> DataError {
        DataError::Hub(Box::new(e))
    }
}
