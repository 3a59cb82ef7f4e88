//! Simplification by named rewrite rules, applied bottom-up to a bounded fixpoint. Each rule
//! is a small local identity; the trace of fired rules is part of `--emit grad`, so a
//! snapshot shows what the simplifier did.
//!
//! Every rule preserves values for finite operands. `mul-zero` (x·0 → 0) also drops a NaN or
//! infinity in x; it only ever fires on gradient terms where the zero is exact (an adjoint that
//! does not flow), which is the standard convention of AD systems. Every rule also preserves
//! types: a per-token node is never replaced by a per-example one (`0·x` stays per token when x
//! is), so reductions keep their per-token operands.

use crate::dag::{Dag, Id, Stage};
use crate::grad::Gradient;
use crate::ops::{Op, Shape, Ty};
use std::collections::BTreeMap;

/// At most this many rebuilding rounds (each round is one bottom-up pass).
pub const MAX_ROUNDS: usize = 16;

/// How often each named rule fired.
pub type Trace = BTreeMap<&'static str, usize>;

/// The name of every rule, in the order they are tried (each has its own test case in
/// `compiler/tests/simplify_rules.txt`).
pub const RULES: [&str; 29] = [
    "const-fold",
    "add-zero",
    "add-neg",
    "add-self",
    "select-merge",
    "sub-zero",
    "zero-sub",
    "sub-self",
    "sub-neg",
    "mul-one",
    "mul-zero",
    "mul-neg-one",
    "mul-neg",
    "div-one",
    "zero-div",
    "div-neg",
    "neg-neg",
    "neg-sub",
    "pow-one",
    "pow-zero",
    "pow-two",
    "select-same",
    "select-true",
    "select-false",
    "select-not",
    "stop-grad-const",
    "stop-grad-twice",
    "abs-neg",
    "not-not",
];

/// `simplify`: the gradient's DAG with every rule applied to a fixpoint, the same roots under
/// the same names, and the trace.
pub fn simplify(g: &Gradient) -> (Gradient, Trace) {
    let (dag, map, trace) = simplify_dag(&g.dag, &g.roots());
    (g.rebuilt(dag, &map), trace)
}

/// Rebuilds the parts of `dag` reachable from `roots` with every rule applied to a fixpoint
/// (or [`MAX_ROUNDS`]). Returns the new DAG, each old node's new id (`None` for nodes not
/// reachable from `roots`) and the trace.
pub fn simplify_dag<S: Stage>(
    dag: &Dag<S>,
    roots: &[Id<S>],
) -> (Dag<S>, Vec<Option<Id<S>>>, Trace) {
    let mut trace = Trace::new();
    let mut current = dag.clone();
    let mut map: Vec<Option<Id<S>>> = dag.ids().map(Some).collect();
    let mut current_roots = roots.to_vec();
    for _ in 0..MAX_ROUNDS {
        let before: usize = trace.values().sum();
        let (next, step) = round(&current, &current_roots, &mut trace);
        for m in map.iter_mut() {
            *m = m.and_then(|id| step[id.index()]);
        }
        current_roots = current_roots
            .iter()
            .map(|r| step[r.index()].expect("operand mapped"))
            .collect();
        current = next;
        if trace.values().sum::<usize>() == before {
            break;
        }
    }
    (current, map, trace)
}

/// One bottom-up pass over the nodes reachable from `roots`; returns the new DAG and each old
/// node's new id.
fn round<S: Stage>(
    dag: &Dag<S>,
    roots: &[Id<S>],
    trace: &mut Trace,
) -> (Dag<S>, Vec<Option<Id<S>>>) {
    let live = dag.reachable(roots);
    let mut out = Dag::new();
    let mut map: Vec<Option<Id<S>>> = vec![None; dag.len()];
    for old in dag.ids() {
        if !live[old.index()] {
            continue;
        }
        let node = dag.node(old);
        let args: Vec<Id<S>> = node
            .args
            .iter()
            .map(|a| map[a.index()].expect("operand mapped"))
            .collect();
        let arg_tys: Vec<Ty> = args.iter().map(|a| out.ty(*a)).collect();
        let ty = node.op.result_ty(&arg_tys);
        let id = match rewrite(&mut out, node.op, &args).filter(|(_, id)| out.ty(*id) == ty) {
            Some((rule, id)) => {
                debug_assert!(RULES.contains(&rule), "rule `{rule}` is not in RULES");
                *trace.entry(rule).or_default() += 1;
                id
            }
            None => out.add(node.op, &args),
        };
        map[old.index()] = Some(id);
    }
    (out, map)
}

/// The rules. Returns the rule's name and the replacement, or `None` if none applies.
fn rewrite<S: Stage>(d: &mut Dag<S>, op: Op, a: &[Id<S>]) -> Option<(&'static str, Id<S>)> {
    use Op::*;
    let k = |d: &Dag<S>, i: usize| d.op(a[i]).const_value();
    let is = |d: &Dag<S>, i: usize, v: f64| k(d, i) == Some(v);
    // Constant folding: every operand constant (and the op is elementwise, not a leaf or a
    // marker).
    if op.arity() > 0 && op != StopGrad && op.shape() == Shape::Elementwise {
        let vals: Option<Vec<f64>> = a
            .iter()
            .map(|&x| match d.op(x) {
                Const(bits) => Some(f64::from_bits(bits)),
                BoolConst(b) => Some(if b { 1.0 } else { 0.0 }),
                _ => None,
            })
            .collect();
        if let Some(v) = vals {
            let r = op.eval(&v);
            let id = if op.signature().1 == Ty::Bool {
                d.add(BoolConst(r != 0.0), &[])
            } else {
                d.constant(r)
            };
            return Some(("const-fold", id));
        }
    }
    let r = match op {
        Add if is(d, 0, 0.0) => ("add-zero", a[1]),
        Add if is(d, 1, 0.0) => ("add-zero", a[0]),
        Add if d.op(a[1]) == Neg => ("add-neg", {
            let b = d.node(a[1]).args[0];
            d.add(Sub, &[a[0], b])
        }),
        Add if d.op(a[0]) == Neg => ("add-neg", {
            let b = d.node(a[0]).args[0];
            d.add(Sub, &[a[1], b])
        }),
        Add if a[0] == a[1] => ("add-self", {
            let two = d.constant(2.0);
            d.add(Mul, &[two, a[0]])
        }),
        // select(c, x, 0) ± select(c, 0, y) → select(c, x, ±y): how adjoints of `if` recombine.
        Add | Sub if split_selects(d, a[0], a[1]).is_some() => ("select-merge", {
            let (c, x, y) = split_selects(d, a[0], a[1]).expect("checked by the guard");
            let y = if op == Sub { d.add(Neg, &[y]) } else { y };
            d.add(Select, &[c, x, y])
        }),
        Sub if is(d, 1, 0.0) => ("sub-zero", a[0]),
        Sub if is(d, 0, 0.0) => ("zero-sub", d.add(Neg, &[a[1]])),
        Sub if a[0] == a[1] => ("sub-self", d.constant(0.0)),
        Sub if d.op(a[1]) == Neg => ("sub-neg", {
            let b = d.node(a[1]).args[0];
            d.add(Add, &[a[0], b])
        }),
        Mul if is(d, 0, 1.0) => ("mul-one", a[1]),
        Mul if is(d, 1, 1.0) => ("mul-one", a[0]),
        Mul if is(d, 0, 0.0) || is(d, 1, 0.0) => ("mul-zero", d.constant(0.0)),
        Mul if is(d, 0, -1.0) => ("mul-neg-one", d.add(Neg, &[a[1]])),
        Mul if is(d, 1, -1.0) => ("mul-neg-one", d.add(Neg, &[a[0]])),
        Mul if d.op(a[0]) == Neg || d.op(a[1]) == Neg => ("mul-neg", {
            let (x, y) = (strip_neg(d, a[0]), strip_neg(d, a[1]));
            let m = d.add(Mul, &[x, y]);
            if (d.op(a[0]) == Neg) != (d.op(a[1]) == Neg) {
                d.add(Neg, &[m])
            } else {
                m
            }
        }),
        Div if is(d, 1, 1.0) => ("div-one", a[0]),
        Div if is(d, 0, 0.0) => ("zero-div", d.constant(0.0)),
        Div if d.op(a[0]) == Neg => ("div-neg", {
            let x = d.node(a[0]).args[0];
            let q = d.add(Div, &[x, a[1]]);
            d.add(Neg, &[q])
        }),
        Neg if d.op(a[0]) == Neg => ("neg-neg", d.node(a[0]).args[0]),
        Neg if d.op(a[0]) == Sub => ("neg-sub", {
            let (x, y) = (d.node(a[0]).args[0], d.node(a[0]).args[1]);
            d.add(Sub, &[y, x])
        }),
        Pow if is(d, 1, 1.0) => ("pow-one", a[0]),
        Pow if is(d, 1, 0.0) => ("pow-zero", d.constant(1.0)),
        Pow if is(d, 1, 2.0) => ("pow-two", d.add(Mul, &[a[0], a[0]])),
        Select if a[1] == a[2] => ("select-same", a[1]),
        Select if d.op(a[0]) == BoolConst(true) => ("select-true", a[1]),
        Select if d.op(a[0]) == BoolConst(false) => ("select-false", a[2]),
        Select if d.op(a[0]) == Not => ("select-not", {
            let c = d.node(a[0]).args[0];
            d.add(Select, &[c, a[2], a[1]])
        }),
        StopGrad if matches!(d.op(a[0]), Const(_)) => ("stop-grad-const", a[0]),
        StopGrad if d.op(a[0]) == StopGrad => ("stop-grad-twice", a[0]),
        Abs if d.op(a[0]) == Neg => ("abs-neg", {
            let x = d.node(a[0]).args[0];
            d.add(Abs, &[x])
        }),
        Not if d.op(a[0]) == Not => ("not-not", d.node(a[0]).args[0]),
        _ => return None,
    };
    Some(r)
}

/// `(c, x, y)` when `p = select(c, x, 0)` and `q = select(c, 0, y)`.
fn split_selects<S: Stage>(d: &Dag<S>, p: Id<S>, q: Id<S>) -> Option<(Id<S>, Id<S>, Id<S>)> {
    let (np, nq) = (d.node(p), d.node(q));
    let zero = |id: Id<S>| d.op(id).const_value() == Some(0.0);
    (np.op == Op::Select
        && nq.op == Op::Select
        && np.args[0] == nq.args[0]
        && zero(np.args[2])
        && zero(nq.args[1]))
    .then(|| (np.args[0], np.args[1], nq.args[2]))
}

fn strip_neg<S: Stage>(d: &Dag<S>, x: Id<S>) -> Id<S> {
    if d.op(x) == Op::Neg {
        d.node(x).args[0]
    } else {
        x
    }
}
