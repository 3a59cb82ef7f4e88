//! Preparing a program for native execution (the JIT): parameters may be bound to their
//! values (specialization: `--set` values are fixed for a run, so `label_smoothing = 0`
//! removes cDPO's second term entirely), and the log-sigmoid family is expanded into the
//! primitives the interpreter itself uses, so that `sigmoid(z)`, `sigmoid(-z)`,
//! `log_sigmoid(z)` and `softplus(-z)` all share one `exp(-|z|)`. Every expansion is
//! exactly the interpreter's formula, so results stay bit-identical.

use crate::dag::{Dag, Id};
use crate::ops::Op;
use crate::simplify;

/// Rebuilds the part of `dag` reachable from `roots` with parameters bound (when `params` is
/// given) and sigmoid-family ops expanded, then simplifies. Returns the new DAG and roots.
pub fn prepare(dag: &Dag, roots: &[Id], params: Option<&[f64]>) -> (Dag, Vec<Id>) {
    let live = dag.reachable(roots);
    let mut out = Dag::new();
    let mut map: Vec<Option<Id>> = vec![None; dag.len()];
    for i in 0..dag.len() {
        if !live[i] {
            continue;
        }
        let node = dag.node(Id(i as u32));
        let a: Vec<Id> = node
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
    let new_roots: Vec<Id> = roots
        .iter()
        .map(|r| map[r.index()].expect("root mapped"))
        .collect();
    let (dag, roots, _) = simplify::simplify(&out, &new_roots);
    (dag, roots)
}

/// `exp(-|x|)`, with `|-y| = |y|` so that x and -x share it.
fn exp_neg_abs(d: &mut Dag, x: Id) -> Id {
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
fn softplus(d: &mut Dag, x: Id) -> Id {
    let e = exp_neg_abs(d, x);
    let l = d.add(Op::Log1p, &[e]);
    let r = d.add(Op::Relu, &[x]);
    d.add(Op::Add, &[r, l])
}
