//! Which nodes carry gradient: a node is active when its value depends on a differentiable
//! input through edges that pass gradient (not through `stop_grad`, the non-differentiable
//! built-ins, or a condition). `check` requires an active loss; `grad` differentiates only
//! through active nodes.

use crate::dag::{Dag, Id, Stage};
use crate::objective::Input;
use crate::ops::{Op, Ty};

/// Whether `root` depends on a differentiable input through edges that carry gradient
/// (not through `stop_grad` or into a condition).
pub fn depends_on_differentiable<S: Stage>(dag: &Dag<S>, inputs: &[Input], root: Id<S>) -> bool {
    active_nodes(dag, inputs)[root.index()]
}

/// For every node: whether its value depends differentiably on a differentiable input.
pub fn active_nodes<S: Stage>(dag: &Dag<S>, inputs: &[Input]) -> Vec<bool> {
    let mut active = vec![false; dag.len()];
    for id in dag.ids() {
        let i = id.index();
        let node = dag.node(id);
        active[i] = match node.op {
            Op::Input(k) | Op::TokenInput(k) => {
                inputs.get(k as usize).is_some_and(|inp| inp.differentiable)
            }
            op if op.blocks_gradient() => false,
            _ if dag.ty(id).elem() == Ty::Bool => false,
            Op::Select => active[node.args[1].index()] || active[node.args[2].index()],
            _ => node.args.iter().any(|a| active[a.index()]),
        };
    }
    active
}
