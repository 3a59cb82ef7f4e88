//! The Llama-3 family decoder: configuration from HF `config.json` (or a preset), the burn
//! module, its forward pass (one [`Block::forward`], with or without a KV cache), HF-layout
//! safetensors loading and saving, and sampling.

pub mod config;
pub mod forward;
pub mod generate;
pub mod llama;
pub mod load;
pub mod resolve;

pub use config::{LlamaConfig, ModelError};
pub use forward::KvCache;
pub use llama::{Adapter, Block, BlockAdapters, Compute, Llama, LoraConfig, Target};
pub use load::SaveDtype;
pub use resolve::{ResolveError, Resolved, config as resolve_config, resolve, resolve_stored};
