//! poc's runtime: executes compiled objectives on burn devices and trains policies against
//! references. It knows observables (sequence log-probs, token counts, entropies, dataset
//! columns) and compiled objectives, never objective names.
#![warn(missing_docs)]

pub mod backend;
pub mod data;
pub mod device;
pub mod model;
pub mod objective;
pub mod observe;
pub mod ppo;
pub mod train;
