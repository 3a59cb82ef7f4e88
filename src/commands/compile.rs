//! `poc compile`: the canonical text form of one compiler stage.

use crate::edge::{Failure, compile, load, user_diags};
use clap::ValueEnum;
use poc_compiler::print;

/// The stage `--emit` names.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Emit {
    Ast,
    Typed,
    Grad,
    Graph,
    Clif,
}

/// Prints stage `emit` of `file`.
pub fn run(file: &str, emit: Emit) -> Result<(), Failure> {
    let (label, src) = load(file)?;
    let text = match emit {
        Emit::Ast => {
            let ast = poc_grammar::parse(&src).map_err(|d| user_diags(&d, &label, &src))?;
            poc_grammar::print::program(&ast)
        }
        Emit::Typed => {
            let obj = crate::edge::check(&label, &src).map_err(|d| user_diags(&d, &label, &src))?;
            print::typed(&obj)
        }
        Emit::Grad => print::grad(&compile(&label, &src)?),
        Emit::Graph => {
            let c = compile(&label, &src)?;
            c.program.text(&c.objective.name)
        }
        Emit::Clif => {
            let c = compile(&label, &src)?;
            let k =
                poc_compiler::jit::Kernel::compile(&c.native_program(None, true)).map_err(|e| {
                    match e {
                        poc_compiler::jit::JitError::Unsupported(m) => {
                            Failure::User(format!("poc: {label}: {m}\n"))
                        }
                        e => Failure::Internal(e.to_string()),
                    }
                })?;
            k.clif().to_string()
        }
    };
    print!("{text}");
    Ok(())
}
