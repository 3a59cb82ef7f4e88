//! The decoder of every implemented family (Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 2/3 text,
//! Phi-3): configuration from HF `config.json` (or a preset) and the family's differences
//! ([`arch::Arch`], which refuses what is not implemented), the burn module, its forward pass
//! (one [`Block::forward`], with or without a KV cache), HF-layout safetensors loading and
//! saving in each family's layout, and sampling.

pub mod arch;
pub mod config;
pub mod forward;
pub mod generate;
pub mod llama;
pub mod load;
pub mod resolve;

pub use arch::{Arch, Family};
pub use config::{LlamaConfig, ModelError};
pub use forward::KvCache;
pub use llama::{Adapter, Block, BlockAdapters, BlockBiases, Compute, Llama, LoraConfig, Target};
pub use load::SaveDtype;
pub use resolve::{ResolveError, Resolved, config as resolve_config, resolve, resolve_stored};
