//! Simplification by named rewrite rules, applied bottom-up to a bounded fixpoint. Each rule
//! is a small local identity; the trace of fired rules is part of `--emit grad`, so a
//! snapshot shows what the simplifier did.
//!
//! The nodes bound by a `let` stay the values of their names: a rule may rewrite such a node
//! itself, but no rule reaches into it from a user (`a · t` stays `a · t` when `a = -b`), so
//! printed gradients (`--emit grad`, `poc explain`) still read in the user's names.
//!
//! Every rule preserves values for finite operands. `mul-zero` (x·0 → 0) also drops a NaN or
//! infinity in x; it only ever fires on gradient terms where the zero is exact (an adjoint that
//! does not flow), which is the standard convention of AD systems. Every rule also preserves
//! types: a per-token node is never replaced by a per-example one (`0·x` stays per token when x
//! is), so reductions keep their per-token operands.

use crate::dag::{Dag, Derived, Id, Stage};
use crate::grad::Gradient;
use crate::ops::{Op, Shape, Ty};
use std::collections::BTreeMap;

/// At most this many rebuilding rounds (each round is one bottom-up pass).
pub const MAX_ROUNDS: usize = 16;

/// How often each named rule fired.
pub type Trace = BTreeMap<&'static str, usize>;

/// The name of every rule, in the order they are tried (each has its own test case in
/// `compiler/tests/simplify_rules.txt`).
pub const RULES: [&str; 32] = [
    "const-fold",
    "add-zero",
    "add-neg",
    "add-self",
    "select-merge",
    "select-and",
    "and-max",
    "and-min",
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
/// the same names, and the trace. The `let`s are kept as written ([`simplify_dag_keeping`]).
pub fn simplify(g: &Gradient) -> (Gradient, Trace) {
    let lets: Vec<Id<Derived>> = g.lets.iter().map(|l| l.1).collect();
    let (dag, map, trace) = simplify_dag_keeping(&g.dag, &g.roots(), &lets);
    (g.rebuilt(dag, &map), trace)
}

/// Rebuilds the parts of `dag` reachable from `roots` with every rule applied to a fixpoint
/// (or [`MAX_ROUNDS`]). Returns the new DAG, each old node's new id (`None` for nodes not
/// reachable from `roots`) and the trace.
pub fn simplify_dag<S: Stage>(
    dag: &Dag<S>,
    roots: &[Id<S>],
) -> (Dag<S>, Vec<Option<Id<S>>>, Trace) {
    simplify_dag_keeping(dag, roots, &[])
}

/// [`simplify_dag`], keeping the nodes `kept` whole: a rule may rewrite a kept node itself
/// (and the result is kept), but no rule matches a pattern that reaches into one from a user
/// (`-x · y → -(x · y)` does not fire when `-x` is kept). Leaves are never rewritten, so
/// keeping one changes nothing.
pub fn simplify_dag_keeping<S: Stage>(
    dag: &Dag<S>,
    roots: &[Id<S>],
    kept: &[Id<S>],
) -> (Dag<S>, Vec<Option<Id<S>>>, Trace) {
    let mut trace = Trace::new();
    let mut current = dag.clone();
    let mut map: Vec<Option<Id<S>>> = dag.ids().map(Some).collect();
    let mut current_roots = roots.to_vec();
    let mut current_kept = kept.to_vec();
    for _ in 0..MAX_ROUNDS {
        let before: usize = trace.values().sum();
        let (next, step) = round(&current, &current_roots, &current_kept, &mut trace);
        for m in map.iter_mut() {
            *m = m.and_then(|id| step[id.index()]);
        }
        current_roots = current_roots
            .iter()
            .map(|r| step[r.index()].expect("operand mapped"))
            .collect();
        current_kept = current_kept
            .iter()
            .filter_map(|k| step[k.index()])
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
    kept: &[Id<S>],
    trace: &mut Trace,
) -> (Dag<S>, Vec<Option<Id<S>>>) {
    let live = dag.reachable(roots);
    let mut is_kept = vec![false; dag.len()];
    for k in kept {
        is_kept[k.index()] = !dag.node(*k).args.is_empty();
    }
    let mut out = Dag::new();
    let mut map: Vec<Option<Id<S>>> = vec![None; dag.len()];
    // Kept nodes of `out`: rules treat them as opaque operands.
    let mut opaque: Vec<Id<S>> = Vec::new();
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
        let mut view = View {
            dag: &mut out,
            opaque: &opaque,
        };
        let rewritten = rewrite(&mut view, node.op, &args).filter(|(_, id)| out.ty(*id) == ty);
        let id = match rewritten {
            Some((rule, id)) => {
                debug_assert!(RULES.contains(&rule), "rule `{rule}` is not in RULES");
                *trace.entry(rule).or_default() += 1;
                id
            }
            None => out.add(node.op, &args),
        };
        if is_kept[old.index()] && !out.node(id).args.is_empty() {
            opaque.push(id);
        }
        map[old.index()] = Some(id);
    }
    (out, map)
}

/// The DAG being built, as the rules see it: a kept node's op is hidden, so no pattern reaches
/// into it.
struct View<'a, S: Stage> {
    dag: &'a mut Dag<S>,
    opaque: &'a [Id<S>],
}

impl<S: Stage> View<'_, S> {
    /// `x`'s op, `None` when `x` is kept.
    fn op(&self, x: Id<S>) -> Option<Op> {
        (!self.opaque.contains(&x)).then(|| self.dag.op(x))
    }

    /// `x`'s operands, when its op is `op` and it is not kept.
    fn args(&self, x: Id<S>, op: Op) -> Option<&[Id<S>]> {
        (self.op(x) == Some(op)).then(|| self.dag.node(x).args.as_slice())
    }

    /// The constant `x` is, if it is one.
    fn constant(&self, x: Id<S>) -> Option<f64> {
        self.dag.op(x).const_value()
    }

    fn add(&mut self, op: Op, args: &[Id<S>]) -> Id<S> {
        self.dag.add(op, args)
    }
}

/// The rules. Returns the rule's name and the replacement, or `None` if none applies.
fn rewrite<S: Stage>(d: &mut View<'_, S>, op: Op, a: &[Id<S>]) -> Option<(&'static str, Id<S>)> {
    use Op::*;
    let k = |d: &View<'_, S>, i: usize| d.constant(a[i]);
    let is = |d: &View<'_, S>, i: usize, v: f64| k(d, i) == Some(v);
    // Constant folding: every operand constant (and the op is elementwise, not a leaf or a
    // marker).
    if op.arity() > 0 && op != StopGrad && op.shape() == Shape::Elementwise {
        let vals: Option<Vec<f64>> = a
            .iter()
            .map(|&x| match d.op(x) {
                Some(Const(bits)) => Some(f64::from_bits(bits)),
                Some(BoolConst(b)) => Some(if b { 1.0 } else { 0.0 }),
                _ => None,
            })
            .collect();
        if let Some(v) = vals {
            let r = op.eval(&v);
            let id = if op.signature().1 == Ty::Bool {
                d.add(BoolConst(r != 0.0), &[])
            } else {
                d.dag.constant(r)
            };
            return Some(("const-fold", id));
        }
    }
    // The operand of `x` when `x` is `-y` (and not kept).
    let neg_of = |d: &View<'_, S>, x: Id<S>| d.args(x, Neg).map(|n| n[0]);
    let r = match op {
        Add if is(d, 0, 0.0) => ("add-zero", a[1]),
        Add if is(d, 1, 0.0) => ("add-zero", a[0]),
        Add if neg_of(d, a[1]).is_some() => ("add-neg", {
            let b = neg_of(d, a[1])?;
            d.add(Sub, &[a[0], b])
        }),
        Add if neg_of(d, a[0]).is_some() => ("add-neg", {
            let b = neg_of(d, a[0])?;
            d.add(Sub, &[a[1], b])
        }),
        Add if a[0] == a[1] => ("add-self", {
            let two = d.dag.constant(2.0);
            d.add(Mul, &[two, a[0]])
        }),
        // select(c, x, 0) ± select(c, 0, y) → select(c, x, ±y): how adjoints of `if` recombine.
        Add | Sub if split_selects(d, a[0], a[1]).is_some() => ("select-merge", {
            let (c, x, y) = split_selects(d, a[0], a[1])?;
            let y = if op == Sub { d.add(Neg, &[y]) } else { y };
            d.add(Select, &[c, x, y])
        }),
        Sub if is(d, 1, 0.0) => ("sub-zero", a[0]),
        Sub if is(d, 0, 0.0) => ("zero-sub", d.add(Neg, &[a[1]])),
        Sub if a[0] == a[1] => ("sub-self", d.dag.constant(0.0)),
        Sub if neg_of(d, a[1]).is_some() => ("sub-neg", {
            let b = neg_of(d, a[1])?;
            d.add(Add, &[a[0], b])
        }),
        Mul if is(d, 0, 1.0) => ("mul-one", a[1]),
        Mul if is(d, 1, 1.0) => ("mul-one", a[0]),
        Mul if is(d, 0, 0.0) || is(d, 1, 0.0) => ("mul-zero", d.dag.constant(0.0)),
        Mul if is(d, 0, -1.0) => ("mul-neg-one", d.add(Neg, &[a[1]])),
        Mul if is(d, 1, -1.0) => ("mul-neg-one", d.add(Neg, &[a[0]])),
        Mul if neg_of(d, a[0]).is_some() || neg_of(d, a[1]).is_some() => ("mul-neg", {
            let (x, y) = (neg_of(d, a[0]), neg_of(d, a[1]));
            let m = d.add(Mul, &[x.unwrap_or(a[0]), y.unwrap_or(a[1])]);
            if x.is_some() != y.is_some() {
                d.add(Neg, &[m])
            } else {
                m
            }
        }),
        Div if is(d, 1, 1.0) => ("div-one", a[0]),
        Div if is(d, 0, 0.0) => ("zero-div", d.dag.constant(0.0)),
        Div if neg_of(d, a[0]).is_some() => ("div-neg", {
            let x = neg_of(d, a[0])?;
            let q = d.add(Div, &[x, a[1]]);
            d.add(Neg, &[q])
        }),
        Neg if neg_of(d, a[0]).is_some() => ("neg-neg", neg_of(d, a[0])?),
        Neg if d.args(a[0], Sub).is_some() => ("neg-sub", {
            let (x, y) = d.args(a[0], Sub).map(|s| (s[0], s[1]))?;
            d.add(Sub, &[y, x])
        }),
        Pow if is(d, 1, 1.0) => ("pow-one", a[0]),
        Pow if is(d, 1, 0.0) => ("pow-zero", d.dag.constant(1.0)),
        Pow if is(d, 1, 2.0) => ("pow-two", d.add(Mul, &[a[0], a[0]])),
        Select if a[1] == a[2] => ("select-same", a[1]),
        Select if d.op(a[0]) == Some(BoolConst(true)) => ("select-true", a[1]),
        Select if d.op(a[0]) == Some(BoolConst(false)) => ("select-false", a[2]),
        Select if d.args(a[0], Not).is_some() => ("select-not", {
            let c = d.args(a[0], Not)?[0];
            d.add(Select, &[c, a[2], a[1]])
        }),
        // if c1 then (if c2 then x else 0) else 0 → if c1 and c2 then x else 0: how the
        // adjoints of nested kinks (a clamp's max inside its min) read.
        Select if is(d, 2, 0.0) && inner_select_zero(d, a[1]).is_some() => ("select-and", {
            let (c2, x) = inner_select_zero(d, a[1])?;
            let both = d.add(And, &[a[0], c2]);
            d.add(Select, &[both, x, a[2]])
        }),
        // a >= b and max(a, b) <= h → a >= b and a <= h: max(a, b) is a where a >= b.
        And if known_extreme(d, a, Ge, Max, Le).is_some() => ("and-max", {
            let (known, x, h) = known_extreme(d, a, Ge, Max, Le)?;
            let rest = d.add(Le, &[x, h]);
            d.add(And, &[known, rest])
        }),
        // a <= b and min(a, b) >= l → a <= b and a >= l, likewise.
        And if known_extreme(d, a, Le, Min, Ge).is_some() => ("and-min", {
            let (known, x, l) = known_extreme(d, a, Le, Min, Ge)?;
            let rest = d.add(Ge, &[x, l]);
            d.add(And, &[known, rest])
        }),
        StopGrad if matches!(d.op(a[0]), Some(Const(_))) => ("stop-grad-const", a[0]),
        StopGrad if d.op(a[0]) == Some(StopGrad) => ("stop-grad-twice", a[0]),
        Abs if neg_of(d, a[0]).is_some() => ("abs-neg", {
            let x = neg_of(d, a[0])?;
            d.add(Abs, &[x])
        }),
        Not if d.args(a[0], Not).is_some() => ("not-not", d.args(a[0], Not)?[0]),
        _ => return None,
    };
    Some(r)
}

/// `(c, x, y)` when `p = select(c, x, 0)` and `q = select(c, 0, y)`.
fn split_selects<S: Stage>(d: &View<'_, S>, p: Id<S>, q: Id<S>) -> Option<(Id<S>, Id<S>, Id<S>)> {
    let (np, nq) = (d.args(p, Op::Select)?, d.args(q, Op::Select)?);
    let zero = |id: Id<S>| d.constant(id) == Some(0.0);
    (np[0] == nq[0] && zero(np[2]) && zero(nq[1])).then(|| (np[0], np[1], nq[2]))
}

/// `(c, x)` when `s = select(c, x, 0)`.
fn inner_select_zero<S: Stage>(d: &View<'_, S>, s: Id<S>) -> Option<(Id<S>, Id<S>)> {
    let n = d.args(s, Op::Select)?;
    (d.constant(n[2]) == Some(0.0)).then(|| (n[0], n[1]))
}

/// For the operands `a` of an `and`: one is `known = cmp(x, y)` and the other
/// `outer(extreme(x, y), h)`, where `extreme(x, y)` is x whenever `known` holds. Returns
/// `(known, x, h)`.
fn known_extreme<S: Stage>(
    d: &View<'_, S>,
    a: &[Id<S>],
    cmp: Op,
    extreme: Op,
    outer: Op,
) -> Option<(Id<S>, Id<S>, Id<S>)> {
    [(a[0], a[1]), (a[1], a[0])]
        .into_iter()
        .find_map(|(known, other)| {
            let &[x, y] = d.args(known, cmp)? else {
                return None;
            };
            let &[e, h] = d.args(other, outer)? else {
                return None;
            };
            (d.args(e, extreme)? == [x, y]).then_some((known, x, h))
        })
}
