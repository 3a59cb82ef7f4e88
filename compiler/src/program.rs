//! The schedule every backend executes: the nodes needed for a set of outputs, in
//! topological order, as single-assignment instructions over per-example columns (per-token
//! values: a sequence per example). The interpreter runs it row by row (token-level programs:
//! instruction by instruction over the batch), the JIT compiles per-example programs into a
//! loop, the runtime maps it onto burn tensor ops (`--emit graph` prints it).

use crate::dag::{Dag, Id, Stage};
use crate::ops::{Op, Ty};
use serde::Serialize;

/// One instruction: `%dst = op(args)`; `dst` is the instruction's index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instr {
    /// The operation.
    pub op: Op,
    /// Operand registers (indices of earlier instructions).
    pub args: Vec<u32>,
    /// Result type.
    pub ty: Ty,
}

/// What a program output means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OutputKind {
    /// The per-example loss.
    Loss,
    /// ∂loss/∂input (index into the objective's inputs).
    Grad(u32),
    /// A metric (index into the objective's metrics).
    Metric(u32),
}

/// A named result of a program.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// What it is.
    pub kind: OutputKind,
    /// Its printable name (`loss`, `d/policy_chosen_logps`, `rewards/chosen`).
    pub name: String,
    /// The register that holds it.
    pub reg: u32,
    /// Its type (a boolean metric is reported as 0/1).
    pub ty: Ty,
}

/// A straight-line program over per-example values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    /// Instructions in execution order.
    pub instrs: Vec<Instr>,
    /// Results.
    pub outputs: Vec<Output>,
    /// Names of the inputs (`Op::Input(i)` and `Op::TokenInput(i)` read column i).
    pub input_names: Vec<String>,
    /// Types of the inputs: `num`, or `num[T]` for a sequence per example.
    pub input_tys: Vec<Ty>,
    /// Names of the parameters (`Op::Param(i)` reads parameter i).
    pub param_names: Vec<String>,
}

impl Program {
    /// Schedules the nodes of `dag` needed by `outputs` (kind, name, node); `inputs` are the
    /// inputs' names and types.
    pub fn schedule<S: Stage>(
        dag: &Dag<S>,
        outputs: &[(OutputKind, String, Id<S>)],
        inputs: Vec<(String, Ty)>,
        param_names: Vec<String>,
    ) -> Program {
        let (input_names, input_tys) = inputs.into_iter().unzip();
        let roots: Vec<Id<S>> = outputs.iter().map(|o| o.2).collect();
        let live = dag.reachable(&roots);
        let mut reg = vec![u32::MAX; dag.len()];
        let mut instrs = Vec::new();
        for id in dag.ids().filter(|id| live[id.index()]) {
            let node = dag.node(id);
            reg[id.index()] = instrs.len() as u32;
            instrs.push(Instr {
                op: node.op,
                args: node.args.iter().map(|a| reg[a.index()]).collect(),
                ty: dag.ty(id),
            });
        }
        let outputs = outputs
            .iter()
            .map(|(kind, name, id)| Output {
                kind: kind.clone(),
                name: name.clone(),
                reg: reg[id.index()],
                ty: dag.ty(*id),
            })
            .collect();
        Program {
            instrs,
            outputs,
            input_names,
            input_tys,
            param_names,
        }
    }

    /// Whether any value is per token (then the JIT does not take it, and the interpreter's
    /// per-row `eval_row`/`eval_batch` are replaced by `eval_columns`).
    pub fn is_token_level(&self) -> bool {
        self.input_tys.iter().any(|t| t.is_token()) || self.instrs.iter().any(|i| i.ty.is_token())
    }

    /// Whether an op reads across the batch (`sort_by`, `unsort`): example i's values depend on
    /// the other examples, so the program runs over whole batches (`eval_columns`), never row
    /// by row, and the JIT does not take it.
    pub fn is_batch_level(&self) -> bool {
        self.instrs
            .iter()
            .any(|i| i.op.shape() == crate::ops::Shape::Across)
    }

    /// Whether the program can run one example at a time ([`crate::interp::eval_row`], the
    /// JIT): neither token-level nor batch-level.
    pub fn per_row(&self) -> bool {
        !self.is_token_level() && !self.is_batch_level()
    }

    /// The inputs' names and types, as `schedule` takes them.
    pub fn inputs(&self) -> Vec<(String, Ty)> {
        self.input_names
            .iter()
            .cloned()
            .zip(self.input_tys.iter().copied())
            .collect()
    }

    /// The register of the loss.
    pub fn loss_reg(&self) -> Option<u32> {
        self.outputs
            .iter()
            .find(|o| o.kind == OutputKind::Loss)
            .map(|o| o.reg)
    }

    /// The canonical text form (`--emit graph`).
    pub fn text(&self, name: &str) -> String {
        let mut s = format!(
            "graph {name}(params: {}; inputs: {})\n",
            self.param_names.join(", "),
            self.input_names.join(", ")
        );
        for (i, ins) in self.instrs.iter().enumerate() {
            let rhs = match ins.op {
                Op::Const(bits) => {
                    format!("const {}", poc_grammar::print::number(f64::from_bits(bits)))
                }
                Op::BoolConst(b) => format!("bool {b}"),
                Op::Input(k) | Op::TokenInput(k) => {
                    format!("input {}", self.input_names[k as usize])
                }
                Op::Param(k) => format!("param {}", self.param_names[k as usize]),
                op => {
                    let args: Vec<String> = ins.args.iter().map(|a| format!("%{a}")).collect();
                    format!("{} {}", op.name(), args.join(" "))
                }
            };
            s.push_str(&format!("  %{i}: {} = {rhs}\n", ins.ty));
        }
        for o in &self.outputs {
            s.push_str(&format!("  out {} = %{}\n", o.name, o.reg));
        }
        s
    }
}
