//! The `.po` language front end: the pest grammar (`src/po.pest`), the spanned syntax tree,
//! the parser, its canonical printer, and the diagnostics every stage shares.
//!
//! `parse(src)` is pure: text in, [`Ast`] or every syntax error out; `parse_partial(src)` keeps
//! the statements that parse beside the syntax errors of the others, so that a later stage can
//! report its own errors with them.
#![warn(missing_docs)]

pub mod ast;
pub mod diag;
mod parse;
pub mod print;

pub use ast::*;
pub use diag::{Diagnostic, ErrorKind, Span};
pub use parse::{Partial, Unparsed, parse, parse_partial};
