//! One module per command. A command turns its arguments into a library call (the pipelines
//! in poc_pipelines, the runtime, the compiler) and prints the result; commands never import
//! each other, and what they share is in [`crate::edge`].

pub mod align;
pub mod bench;
pub mod check;
pub mod compile;
pub mod eval;
pub mod explain;
pub mod generate;
pub mod list;
pub mod mpo;
pub mod plot;
pub mod run;
pub mod split;
pub mod world;
