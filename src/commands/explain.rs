//! `poc explain`: an objective's parameters, inputs, loss, gradient and metrics as math.

use crate::edge::{Failure, load_compiled};
use poc_compiler::print;

/// Prints the explanation of `file`, as source-like text or as LaTeX.
pub fn run(file: &str, latex: bool) -> Result<(), Failure> {
    let c = load_compiled(file)?;
    let style = if latex {
        print::Style::Latex
    } else {
        print::Style::Source
    };
    print!("{}", print::explain(&c, style));
    Ok(())
}
