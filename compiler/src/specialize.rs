//! JIT specialization: the gradient rewritten for native execution. Parameters may be bound
//! to their values (`--set` values are fixed for a run, so `label_smoothing = 0` removes
//! cDPO's second term entirely), and the log-sigmoid family is expanded into the primitives
//! the interpreter itself uses, so that `sigmoid(z)`, `sigmoid(-z)`, `log_sigmoid(z)` and
//! `softplus(-z)` all share one `exp(-|z|)` and one `ln(1 + ·)`. This is the only place the
//! family is expanded (the JIT lowers the ops as calls to the interpreter's functions); every
//! expansion is exactly the interpreter's formula, so results stay bit-identical.

use crate::dag::{Dag, Derived, Id};
use crate::grad::Gradient;
use crate::ops::Op;
use crate::simplify;

/// The gradient `g` with parameters bound (when `params` is given) and sigmoid-family ops
/// expanded, then simplified; the same roots under the same names.
pub fn specialize(g: &Gradient, params: Option<&[f64]>) -> Gradient {
    let dag = &g.dag;
    let live = dag.reachable(&g.roots());
    let mut out = Dag::new();
    let mut map: Vec<Option<Id<Derived>>> = vec![None; dag.len()];
    for old in dag.ids() {
        let i = old.index();
        if !live[i] {
            continue;
        }
        let node = dag.node(old);
        let a: Vec<Id<Derived>> = node
            .args
            .iter()
            .map(|x| map[x.index()].expect("operand mapped"))
            .collect();
        let id = match node.op {
            Op::Param(k) if params.is_some_and(|p| (k as usize) < p.len()) => {
                out.constant(params.map(|p| p[k as usize]).unwrap_or_default())
            }
            Op::Softplus => softplus(&mut out, a[0]),
            Op::LogSigmoid => {
                // log σ(x) = -softplus(-x)
                let nx = out.add(Op::Neg, &[a[0]]);
                let sp = softplus(&mut out, nx);
                out.add(Op::Neg, &[sp])
            }
            Op::Sigmoid => {
                // σ(x) = 1/(1+e) if x >= 0 else e/(1+e), with e = exp(-|x|) (= exp(x) for x < 0)
                let e = exp_neg_abs(&mut out, a[0]);
                let one = out.constant(1.0);
                let zero = out.constant(0.0);
                let den = out.add(Op::Add, &[one, e]);
                let pos = out.add(Op::Div, &[one, den]);
                let neg = out.add(Op::Div, &[e, den]);
                let c = out.add(Op::Ge, &[a[0], zero]);
                out.add(Op::Select, &[c, pos, neg])
            }
            op => out.add(op, &a),
        };
        map[i] = Some(id);
    }
    let (specialized, _) = simplify::simplify(&g.rebuilt(out, &map));
    specialized
}

/// `exp(-|x|)`, with `|-y| = |y|` so that x and -x share it.
fn exp_neg_abs(d: &mut Dag<Derived>, x: Id<Derived>) -> Id<Derived> {
    let inner = if d.op(x) == Op::Neg {
        d.node(x).args[0]
    } else {
        x
    };
    let ax = d.add(Op::Abs, &[inner]);
    let nax = d.add(Op::Neg, &[ax]);
    d.add(Op::Exp, &[nax])
}

/// `softplus(x) = relu(x) + log1p(exp(-|x|))`, exactly `ops::softplus`.
fn softplus(d: &mut Dag<Derived>, x: Id<Derived>) -> Id<Derived> {
    let e = exp_neg_abs(d, x);
    let l = d.add(Op::Log1p, &[e]);
    let r = d.add(Op::Relu, &[x]);
    d.add(Op::Add, &[r, l])
}
