//! The `.po` language front end: the pest grammar (`src/po.pest`), the spanned syntax tree,
//! the parser, its canonical printer, and the diagnostics every stage shares.
//!
//! `parse(src)` is pure: text in, [`Ast`] or every syntax error out.
#![warn(missing_docs)]

pub mod ast;
pub mod diag;
mod parse;
pub mod print;

pub use ast::*;
pub use diag::{Diagnostic, ErrorKind, Span};
pub use parse::parse;
