//! poc's experiment pipelines, as library functions over plain option structs: the synthetic
//! preference world's files ([`world`]), MPO's easy/hard split ([`split`]), the MPO pipeline
//! ([`mpo`]), the alignment benchmark ([`align`]), the throughput benchmarks of evaluation and
//! training ([`bench`]), memory against the plan ([`memory`]), figures ([`plot`]), and the one stage runner ([`stage`]) through which
//! a pipeline runs its stages as child `poc` commands described by typed values.
//!
//! This crate knows nothing of command-line parsing: the `poc` binary turns its flags into
//! these option structs, and turns a typed [`stage::Stage`] back into a command line.
#![warn(missing_docs)]

pub mod align;
pub mod bench;
pub mod jsonl;
pub mod library;
pub mod memory;
pub mod mpo;
pub mod plot;
pub mod prompts;
pub mod split;
pub mod stage;
pub mod world;

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user (a file, a flag value, a model directory): the message, already
    /// worded for them, names the place.
    #[error("{0}")]
    User(String),
    /// A bug in poc.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A user error from `command` (`poc mpo`, say): `"{command}: {e}"`.
    pub fn user(command: &str, e: impl std::fmt::Display) -> Error {
        Error::User(format!("{command}: {e}"))
    }
}

/// A pipeline's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
