//! poc's compiler: a checked, differentiated, simplified objective and its three lowerings
//! (f64 interpreter, Cranelift JIT, and the tensor program the runtime maps onto burn).
//! Pure: strings in, values out; no files, no devices.
//!
//! The driver below is the table of contents:
//! `parse → check → differentiate → simplify → schedule → (interpret | jit | burn)`.
#![warn(missing_docs)]

pub mod check;
pub mod dag;
pub mod grad;
pub mod interp;
pub mod jit;
pub mod native;
pub mod ops;
pub mod print;
pub mod program;
pub mod simplify;

pub use check::{Input, Objective, Param, Rollout, Side, Source};
pub use poc_grammar::{Diagnostic, ErrorKind};
pub use program::{OutputKind, Program};

use dag::{Dag, Id};
use program::OutputKind as K;

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

/// Everything the backends and the CLI need about one objective.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The checked objective as written (its DAG holds the unsimplified values).
    pub objective: Objective,
    /// The simplified DAG holding the loss, every gradient, the metrics and the lets.
    pub dag: Dag,
    /// The loss in `dag`.
    pub loss: Id,
    /// ∂loss/∂input for each differentiable input, in `dag`.
    pub grads: Vec<(u32, Id)>,
    /// Metrics in `dag`, in declaration order.
    pub metrics: Vec<(String, Id)>,
    /// `let` names of nodes in `dag` (for readable printing).
    pub let_names: Vec<(String, Id)>,
    /// How often each rewrite rule fired.
    pub trace: simplify::Trace,
    /// Loss, gradients and metrics: what `poc eval` and the symbolic-gradient path run.
    pub program: Program,
    /// Loss and metrics only: what a backend with its own autodiff differentiates.
    pub loss_program: Program,
}

impl Compiled {
    /// The program for native execution (the JIT): sigmoid-family ops expanded so they share
    /// their exponentials, and, when `params` is given, parameters bound to those values
    /// (constant-folded away). `with_metrics: false` keeps only the loss and gradients.
    pub fn native_program(&self, params: Option<&[f64]>, with_metrics: bool) -> Program {
        let keep: Vec<&program::Output> = self
            .program
            .outputs
            .iter()
            .filter(|o| with_metrics || !matches!(o.kind, K::Metric(_)))
            .collect();
        // Outputs refer to registers; map them back to the DAG through the schedule order.
        let live = self.dag.reachable(
            &std::iter::once(self.loss)
                .chain(self.grads.iter().map(|g| g.1))
                .chain(self.metrics.iter().map(|m| m.1))
                .collect::<Vec<_>>(),
        );
        let reg_to_id: Vec<Id> = (0..self.dag.len())
            .filter(|&i| live[i])
            .map(|i| Id(i as u32))
            .collect();
        let roots: Vec<Id> = keep.iter().map(|o| reg_to_id[o.reg as usize]).collect();
        let (dag, roots) = native::prepare(&self.dag, &roots, params);
        let outputs: Vec<(K, String, Id)> = keep
            .iter()
            .zip(roots)
            .map(|(o, id)| (o.kind.clone(), o.name.clone(), id))
            .collect();
        Program::schedule(
            &dag,
            &outputs,
            self.program.inputs(),
            self.program.param_names.clone(),
        )
    }
}

/// Parses and checks `src`.
pub fn check_source(src: &str) -> Result<Objective, Vec<Diagnostic>> {
    let ast = poc_grammar::parse(src)?;
    check::check(&ast)
}

/// The whole pipeline on source text.
pub fn compile(src: &str) -> Result<Compiled, CompileError> {
    let objective = check_source(src).map_err(CompileError::User)?;
    verify("check", &objective.dag)?;
    lower(objective)
}

/// Differentiates, simplifies and schedules a checked objective.
pub fn lower(objective: Objective) -> Result<Compiled, CompileError> {
    let mut with_grads = objective.clone();
    let partials = grad::differentiate(&mut with_grads);
    verify("differentiate", &with_grads.dag)?;

    // Everything that must survive simplification is a root: loss, gradients, metrics, lets.
    let mut roots = vec![with_grads.loss];
    roots.extend(partials.iter().map(|p| p.id));
    roots.extend(objective.metrics.iter().map(|m| m.id));
    roots.extend(objective.lets.iter().map(|l| l.id));
    let (dag, new_roots, trace) = simplify::simplify(&with_grads.dag, &roots);
    verify("simplify", &dag)?;

    let loss = new_roots[0];
    let mut rest = new_roots[1..].iter().copied();
    let grads: Vec<(u32, Id)> = partials
        .iter()
        .map(|p| (p.input, rest.next().expect("one root per gradient")))
        .collect();
    let metrics: Vec<(String, Id)> = objective
        .metrics
        .iter()
        .map(|m| (m.name.clone(), rest.next().expect("one root per metric")))
        .collect();
    let let_names: Vec<(String, Id)> = objective
        .lets
        .iter()
        .map(|l| (l.name.clone(), rest.next().expect("one root per let")))
        .collect();

    let inputs: Vec<(String, ops::Ty)> = objective
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.source.ty()))
        .collect();
    let param_names: Vec<String> = objective.params.iter().map(|p| p.name.clone()).collect();
    let mut outputs = vec![(K::Loss, "loss".to_string(), loss)];
    outputs.extend(
        grads
            .iter()
            .map(|&(k, id)| (K::Grad(k), format!("d/{}", inputs[k as usize].0), id)),
    );
    let metric_outputs: Vec<(K, String, Id)> = metrics
        .iter()
        .enumerate()
        .map(|(k, (name, id))| (K::Metric(k as u32), name.clone(), *id))
        .collect();
    outputs.extend(metric_outputs.iter().cloned());
    let program = Program::schedule(&dag, &outputs, inputs.clone(), param_names.clone());
    let mut loss_outputs = vec![(K::Loss, "loss".to_string(), loss)];
    loss_outputs.extend(metric_outputs);
    let loss_program = Program::schedule(&dag, &loss_outputs, inputs, param_names);

    Ok(Compiled {
        objective,
        dag,
        loss,
        grads,
        metrics,
        let_names,
        trace,
        program,
        loss_program,
    })
}

/// The verifier between passes: a broken invariant is an internal error naming the stage.
fn verify(stage: &'static str, dag: &Dag) -> Result<(), CompileError> {
    dag.verify()
        .map_err(|message| CompileError::Internal { stage, message })
}
