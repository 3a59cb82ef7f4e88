//! poc's runtime: executes compiled objectives on burn devices and trains policies against
//! references. It knows observables (sequence log-probs, token counts, entropies, dataset
//! columns) and compiled objectives, never objective names.
//!
//! - [`lower`]: a compiled program as burn tensor ops (the burn lowering);
//! - [`observe`]: the observables an objective declares, from model statistics;
//! - [`model`], [`data`], [`device`]: the decoder, tokenizers and datasets, devices;
//! - [`hub`]: Hugging Face Hub names (`ORG/NAME[@REVISION]`) resolved from the HF cache,
//!   downloaded when missing;
//! - [`kernels`]: fused libtorch operations under burn's autodiff (attention, the log-prob head);
//! - [`plan`]: the memory plan of a run (`poc run --dry-run`);
//! - [`train`]: the training core (set-up, reference, optimizer, the pair and on-policy loops).
#![warn(missing_docs)]

pub mod backend;
pub mod data;
pub mod device;
pub mod flops;
pub mod hub;
pub mod kernels;
pub mod lower;
pub mod model;
pub mod observe;
pub mod plan;
pub mod python;
pub mod train;
