//! poc's compiler: a checked, differentiated, simplified objective and its three lowerings
//! (f64 interpreter, Cranelift JIT, and the tensor program the runtime maps onto burn).
//! Pure: strings in, values out; no files, no devices.
//!
//! The driver below is the table of contents:
//! `parse → check → differentiate → simplify → schedule → (interpret | jit | burn)`.
#![warn(missing_docs)]

pub mod active;
pub mod check;
pub mod dag;
pub mod grad;
pub mod interp;
pub mod jit;
pub mod library;
pub mod objective;
pub mod ops;
pub mod print;
pub mod program;
pub mod simplify;
pub mod source;
pub mod specialize;

pub use grad::Gradient;
pub use library::{Files, NoFiles};
pub use objective::{Input, Objective, Param};
pub use poc_grammar::{Diagnostic, ErrorKind};
pub use program::{OutputKind, Program};
pub use source::{Rollout, Side, Source};

use dag::{Dag, Stage};

/// Why compilation stopped.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The source is wrong; the diagnostics say where.
    #[error("{} error(s) in the objective", .0.len())]
    User(Vec<Diagnostic>),
    /// A compiler bug: an invariant broke after the named stage.
    #[error("internal compiler error after {stage}: {message}")]
    Internal {
        /// The stage whose output failed verification.
        stage: &'static str,
        /// What broke.
        message: String,
    },
}

/// Everything the backends and the CLI need about one objective: each stage's output.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// `check`: the objective as written (its DAG holds the values before differentiation).
    pub objective: Objective,
    /// `differentiate` + `simplify`: the loss, every gradient, the metrics and the lets, in a
    /// DAG of its own ([`dag::Derived`] ids, which cannot index the objective's).
    pub gradient: Gradient,
    /// How often each rewrite rule fired.
    pub trace: simplify::Trace,
    /// `schedule`: loss, gradients and metrics — what `poc eval` and the symbolic-gradient
    /// path run.
    pub program: Program,
    /// Loss and metrics only: what a backend with its own autodiff differentiates.
    pub loss_program: Program,
}

impl Compiled {
    /// The program for native execution (the JIT): the gradient specialized
    /// ([`specialize::specialize`]: sigmoid-family ops expanded so they share their
    /// exponentials, and, when `params` is given, parameters bound to those values and
    /// constant-folded away). `with_metrics: false` keeps only the loss and gradients.
    pub fn native_program(&self, params: Option<&[f64]>, with_metrics: bool) -> Program {
        let native = specialize::specialize(&self.gradient.outputs_only(with_metrics), params);
        schedule(&self.objective, &native, true)
    }
}

/// Parses and checks `src` (`use` resolves shipped objectives only).
pub fn check_source(src: &str) -> Result<Objective, Vec<Diagnostic>> {
    check_source_with(src, &NoFiles)
}

/// Parses and checks `src`, reading the files of `use "file.po"` from `files`. A syntax error
/// does not hide the errors of the statements that parse: all are returned together.
pub fn check_source_with(src: &str, files: &dyn Files) -> Result<Objective, Vec<Diagnostic>> {
    check::check_parsed(&poc_grammar::parse_partial(src), files)
}

/// The whole pipeline on source text:
/// `parse → check → differentiate → simplify → schedule`, verified between passes. `use`
/// resolves shipped objectives only; [`compile_with`] also reads files.
pub fn compile(src: &str) -> Result<Compiled, CompileError> {
    compile_with(src, &NoFiles)
}

/// [`compile`], reading the files of `use "file.po"` from `files`.
pub fn compile_with(src: &str, files: &dyn Files) -> Result<Compiled, CompileError> {
    let objective = check_source_with(src, files).map_err(CompileError::User)?;
    verify("check", &objective.dag)?;
    lower(objective)
}

/// Differentiates, simplifies and schedules a checked objective.
pub fn lower(objective: Objective) -> Result<Compiled, CompileError> {
    let gradient = grad::differentiate(&objective);
    verify("differentiate", &gradient.dag)?;
    let (gradient, trace) = simplify::simplify(&gradient);
    verify("simplify", &gradient.dag)?;
    Ok(Compiled {
        program: schedule(&objective, &gradient, true),
        loss_program: schedule(&objective, &gradient, false),
        objective,
        gradient,
        trace,
    })
}

/// `schedule`: the program of `gradient`'s loss, gradients (with `grads`) and metrics, over
/// the objective's inputs and parameters.
pub fn schedule(objective: &Objective, gradient: &Gradient, grads: bool) -> Program {
    let inputs: Vec<(String, ops::Ty)> = objective
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.source.ty()))
        .collect();
    let names: Vec<String> = inputs.iter().map(|i| i.0.clone()).collect();
    let params: Vec<String> = objective.params.iter().map(|p| p.name.clone()).collect();
    Program::schedule(
        &gradient.dag,
        &gradient.outputs(&names, grads),
        inputs,
        params,
    )
}

/// The verifier between passes: a broken invariant is an internal error naming the stage.
fn verify<S: Stage>(stage: &'static str, dag: &Dag<S>) -> Result<(), CompileError> {
    dag.verify()
        .map_err(|message| CompileError::Internal { stage, message })
}
