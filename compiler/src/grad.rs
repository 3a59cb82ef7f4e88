//! Reverse-mode symbolic differentiation over the DAG: one local rule per op
//! ([`local_grads`]), adjoints accumulated in reverse topological order. `stop_grad`,
//! comparisons, conditions and the non-differentiable built-ins (`gae`, `whiten`,
//! `last_token`) carry no gradient. Conventions at kinks are documented in docs/LANGUAGE.md
//! and implemented in the rules below.
//!
//! Token values: the rules are the elementwise ones, with scalars broadcast; an adjoint may be
//! a scalar standing for the same value at every token. Where a per-example operand of a
//! per-token op receives a per-token contribution, the contribution is summed over the tokens
//! (`sum`), the adjoint of broadcasting. A reduction's adjoint broadcasts back
//! (`masked_sum(x, m)` sends `g·m` to x).

use crate::active::active_nodes;
use crate::dag::{Dag, Derived, Id, Stage};
use crate::objective::Objective;
use crate::ops::Op;
use crate::program::OutputKind;

/// The gradient of the loss with respect to input `input` (an index into
/// `Objective::inputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// Which input.
    pub input: u32,
    /// ∂loss/∂input.
    pub id: Id<Derived>,
}

/// `differentiate`'s output (and, simplified, `simplify`'s): one DAG holding the loss, the
/// gradient with respect to every differentiable input, the metrics and the `let`s, each root
/// under its name. Its ids are [`Derived`]: they cannot index the objective's DAG.
#[derive(Debug, Clone)]
pub struct Gradient {
    /// Every value.
    pub dag: Dag<Derived>,
    /// The per-example loss.
    pub loss: Id<Derived>,
    /// ∂loss/∂input for each differentiable input, in input order.
    pub grads: Vec<Partial>,
    /// The metrics, in declaration order.
    pub metrics: Vec<(String, Id<Derived>)>,
    /// The `let`s, by name (so printed forms can use the names).
    pub lets: Vec<(String, Id<Derived>)>,
}

impl Gradient {
    /// Every root: loss, gradients, metrics and lets.
    pub fn roots(&self) -> Vec<Id<Derived>> {
        std::iter::once(self.loss)
            .chain(self.grads.iter().map(|p| p.id))
            .chain(self.metrics.iter().map(|m| m.1))
            .chain(self.lets.iter().map(|l| l.1))
            .collect()
    }

    /// The same roots in `dag`, a rebuild of this DAG: `map[old]` is each old node's new id
    /// (`None` for nodes the rebuild dropped, which no root is).
    pub fn rebuilt(&self, dag: Dag<Derived>, map: &[Option<Id<Derived>>]) -> Gradient {
        let at = |id: Id<Derived>| map[id.index()].expect("a rebuild keeps every root");
        Gradient {
            dag,
            loss: at(self.loss),
            grads: self
                .grads
                .iter()
                .map(|p| Partial {
                    input: p.input,
                    id: at(p.id),
                })
                .collect(),
            metrics: self
                .metrics
                .iter()
                .map(|(n, id)| (n.clone(), at(*id)))
                .collect(),
            lets: self
                .lets
                .iter()
                .map(|(n, id)| (n.clone(), at(*id)))
                .collect(),
        }
    }

    /// Only the roots a program reads: the loss, the gradients and (with `metrics`) the
    /// metrics; the `let` names are dropped.
    pub fn outputs_only(&self, metrics: bool) -> Gradient {
        Gradient {
            dag: self.dag.clone(),
            loss: self.loss,
            grads: self.grads.clone(),
            metrics: if metrics {
                self.metrics.clone()
            } else {
                vec![]
            },
            lets: vec![],
        }
    }

    /// The program outputs: the loss, then (with `grads`) `d/INPUT` for each gradient, then
    /// the metrics. `input_names` names the objective's inputs.
    pub fn outputs(
        &self,
        input_names: &[String],
        grads: bool,
    ) -> Vec<(OutputKind, String, Id<Derived>)> {
        let mut out = vec![(OutputKind::Loss, "loss".to_string(), self.loss)];
        if grads {
            out.extend(self.grads.iter().map(|p| {
                let name = format!("d/{}", input_names[p.input as usize]);
                (OutputKind::Grad(p.input), name, p.id)
            }));
        }
        out.extend(
            self.metrics
                .iter()
                .enumerate()
                .map(|(k, (name, id))| (OutputKind::Metric(k as u32), name.clone(), *id)),
        );
        out
    }
}

/// ∂loss/∂x for every differentiable input x, added to (a copy of) the objective's DAG so
/// that shared subexpressions stay shared, with the loss, metrics and lets beside them.
pub fn differentiate(obj: &Objective) -> Gradient {
    let active = active_nodes(&obj.dag, &obj.inputs);
    let mut dag: Dag<Derived> = obj.dag.clone().into_stage();
    let loss: Id<Derived> = obj.loss.into_stage();
    let mut adjoint: Vec<Option<Id<Derived>>> = vec![None; dag.len()];
    adjoint[loss.index()] = Some(dag.constant(1.0));
    for i in (0..=loss.index()).rev() {
        let (Some(g), true) = (adjoint[i], active[i]) else {
            continue;
        };
        let id = Id::new(i);
        let node = dag.node(id).clone();
        for (k, contribution) in local_grads(&mut dag, id, node.op, &node.args, g) {
            let arg = node.args[k];
            if !active[arg.index()] {
                continue;
            }
            let contribution = if dag.ty(contribution).is_token() && !dag.ty(arg).is_token() {
                dag.add(Op::Sum, &[contribution])
            } else {
                contribution
            };
            adjoint[arg.index()] = Some(match adjoint[arg.index()] {
                Some(prev) => dag.add(Op::Add, &[prev, contribution]),
                None => contribution,
            });
        }
    }
    let grads = obj
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, inp)| inp.differentiable)
        .map(|(k, inp)| {
            let per_token = inp.source.ty().is_token();
            let leaf = if per_token {
                dag.add(Op::TokenInput(k as u32), &[])
            } else {
                dag.add(Op::Input(k as u32), &[])
            };
            let mut id = adjoint
                .get(leaf.index())
                .copied()
                .flatten()
                .unwrap_or_else(|| dag.constant(0.0));
            // The gradient with respect to a per-token input is per token.
            if per_token && !dag.ty(id).is_token() {
                id = dag.add(Op::Broadcast, &[id, leaf]);
            }
            Partial {
                input: k as u32,
                id,
            }
        })
        .collect();
    let named = |bindings: &[crate::objective::Binding]| {
        bindings
            .iter()
            .map(|b| (b.name.clone(), b.id.into_stage()))
            .collect()
    };
    Gradient {
        dag,
        loss,
        grads,
        metrics: named(&obj.metrics),
        lets: named(&obj.lets),
    }
}

/// The local rule of each op: given the adjoint `g` of node `y = op(args)`, the contribution
/// to each operand's adjoint, as `(operand index, node)`. Operands without a contribution
/// (conditions, `stop_grad`, constants) are simply not listed.
pub fn local_grads<S: Stage>(
    dag: &mut Dag<S>,
    y: Id<S>,
    op: Op,
    args: &[Id<S>],
    g: Id<S>,
) -> Vec<(usize, Id<S>)> {
    use Op::*;
    let mut c = |op: Op, a: &[Id<S>]| dag.add(op, a);
    match op {
        Const(_) | BoolConst(_) | Input(_) | TokenInput(_) | Param(_) => vec![],
        Neg => vec![(0, c(Neg, &[g]))],
        Add => vec![(0, g), (1, g)],
        Sub => vec![(0, g), (1, c(Neg, &[g]))],
        Mul => vec![(0, c(Mul, &[g, args[1]])), (1, c(Mul, &[g, args[0]]))],
        Div => {
            // d(a/b) = da/b - (a/b) db/b
            let ga = c(Div, &[g, args[1]]);
            let gy = c(Mul, &[g, y]);
            let q = c(Div, &[gy, args[1]]);
            vec![(0, ga), (1, c(Neg, &[q]))]
        }
        Pow => {
            // d(a^b) = b a^(b-1) da + a^b ln(a) db
            let one = c(Const(1f64.to_bits()), &[]);
            let bm1 = c(Sub, &[args[1], one]);
            let p = c(Pow, &[args[0], bm1]);
            let dp = c(Mul, &[args[1], p]);
            let ln = c(Log, &[args[0]]);
            let yl = c(Mul, &[y, ln]);
            vec![(0, c(Mul, &[g, dp])), (1, c(Mul, &[g, yl]))]
        }
        Exp => vec![(0, c(Mul, &[g, y]))],
        Log => vec![(0, c(Div, &[g, args[0]]))],
        Log1p => {
            let one = c(Const(1f64.to_bits()), &[]);
            let d = c(Add, &[one, args[0]]);
            vec![(0, c(Div, &[g, d]))]
        }
        Expm1 => {
            let one = c(Const(1f64.to_bits()), &[]);
            let e = c(Add, &[y, one]);
            vec![(0, c(Mul, &[g, e]))]
        }
        Sqrt => {
            // 1 / (2 sqrt(a)); infinite at a = 0, as the math says.
            let two = c(Const(2f64.to_bits()), &[]);
            let d = c(Mul, &[two, y]);
            vec![(0, c(Div, &[g, d]))]
        }
        Abs => {
            let s = c(Sign, &[args[0]]);
            vec![(0, c(Mul, &[g, s]))]
        }
        Sign => vec![],
        Sigmoid => {
            // σ' = σ(a) σ(-a): accurate where σ(a) ≈ 1, unlike σ(1-σ).
            let na = c(Neg, &[args[0]]);
            let s = c(Sigmoid, &[na]);
            let d = c(Mul, &[y, s]);
            vec![(0, c(Mul, &[g, d]))]
        }
        LogSigmoid => {
            let na = c(Neg, &[args[0]]);
            let s = c(Sigmoid, &[na]);
            vec![(0, c(Mul, &[g, s]))]
        }
        Softplus => {
            let s = c(Sigmoid, &[args[0]]);
            vec![(0, c(Mul, &[g, s]))]
        }
        Tanh => {
            let one = c(Const(1f64.to_bits()), &[]);
            let y2 = c(Mul, &[y, y]);
            let d = c(Sub, &[one, y2]);
            vec![(0, c(Mul, &[g, d]))]
        }
        Relu => {
            // relu'(0) = 0, as PyTorch.
            let zero = c(Const(0f64.to_bits()), &[]);
            let pos = c(Gt, &[args[0], zero]);
            vec![(0, c(Select, &[pos, g, zero]))]
        }
        Min | Max => {
            // At a tie the whole gradient goes to the first operand.
            let cmp = if op == Min { Le } else { Ge };
            let zero = c(Const(0f64.to_bits()), &[]);
            let first = c(cmp, &[args[0], args[1]]);
            vec![
                (0, c(Select, &[first, g, zero])),
                (1, c(Select, &[first, zero, g])),
            ]
        }
        StopGrad => vec![],
        Lt | Le | Gt | Ge | Eq | Ne | And | Or | Not => vec![],
        // The shape operand carries no value.
        Broadcast => vec![(0, g)],
        // Every token gets the sum's adjoint.
        Sum => vec![(0, g)],
        // d/dx_t = g·m_t; d/dm_t = g·x_t (also at m_t = 0, where m·x is continuous).
        MaskedSum => vec![(0, c(Mul, &[g, args[1]])), (1, c(Mul, &[g, args[0]]))],
        // Non-differentiable built-ins: constants for differentiation (documented).
        LastToken | Gae | Whiten => vec![],
        // A permutation of v (fixed by k, which gets no gradient): the adjoint goes back through
        // the inverse permutation, and the other way round.
        SortBy => vec![(0, c(Unsort, &[g, args[1]]))],
        Unsort => vec![(0, c(SortBy, &[g, args[1]]))],
        Select => {
            let zero = c(Const(0f64.to_bits()), &[]);
            vec![
                (1, c(Select, &[args[0], g, zero])),
                (2, c(Select, &[args[0], zero, g])),
            ]
        }
    }
}
