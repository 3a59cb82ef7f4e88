//! The Llama-3 family decoder: configuration from HF `config.json` (or a preset), the burn
//! module, HF-layout safetensors loading and saving, and sampling with a KV cache.

pub mod config;
pub mod generate;
pub mod llama;
pub mod load;
pub mod resolve;

pub use config::{LlamaConfig, ModelError};
pub use llama::{
    Adapter, BlockAdapters, Compute, Llama, LoraConfig, SequenceStats, Target, TokenStats, Want,
};
pub use resolve::{ResolveError, Resolved, resolve};
