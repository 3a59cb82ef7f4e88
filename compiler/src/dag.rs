//! The expression DAG: a flat arena of nodes addressed by [`Id`], hash-consed so that equal
//! subterms are one node. Operands are always created before their users, so ascending ids
//! are a topological order — every pass relies on this. Each node's type follows from its op
//! and its operands' types (scalars broadcast over token sequences) and is kept beside it.
//!
//! A DAG and its ids carry their stage ([`Written`]: the objective as checked; [`Derived`]:
//! with its gradient, simplified, specialized), so an id of one stage's DAG cannot index
//! another's: the compiler holds both, and mixing them is a type error.

use crate::ops::{Op, Ty};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

/// The stage a [`Dag`] belongs to (a marker type).
pub trait Stage: Copy + Debug + Default + Eq + Hash + Ord + 'static {}

/// The objective as written: `check`'s DAG.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Written;
impl Stage for Written {}

/// Everything made from it: the DAG with the gradient, simplified, specialized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Derived;
impl Stage for Derived {}

/// A node's index in its [`Dag`] of stage `S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Id<S: Stage>(u32, #[serde(skip)] PhantomData<S>);

impl<S: Stage> Id<S> {
    /// The id of the node at `index`.
    pub(crate) fn new(index: usize) -> Self {
        Id(index as u32, PhantomData)
    }

    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The same node once its DAG moves on to stage `T` ([`Dag::into_stage`]).
    pub(crate) fn into_stage<T: Stage>(self) -> Id<T> {
        Id(self.0, PhantomData)
    }
}

impl<S: Stage> std::fmt::Display for Id<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One operation applied to earlier nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node<S: Stage> {
    /// The operation.
    pub op: Op,
    /// Operands (exactly `op.arity()` of them), all with smaller ids.
    pub args: Vec<Id<S>>,
}

/// A hash-consed arena of [`Node`]s.
#[derive(Debug, Clone, Default)]
pub struct Dag<S: Stage> {
    nodes: Vec<Node<S>>,
    tys: Vec<Ty>,
    memo: HashMap<Node<S>, Id<S>>,
}

impl<S: Stage> Dag<S> {
    /// An empty DAG.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node for `op(args)`, reusing an existing equal node. Operands of commutative ops
    /// are put in id order so that `a + b` and `b + a` are one node.
    pub fn add(&mut self, op: Op, args: &[Id<S>]) -> Id<S> {
        debug_assert_eq!(args.len(), op.arity(), "wrong operand count for {op:?}");
        let mut args = args.to_vec();
        if op.commutative() {
            // Leaves (constants, parameters, inputs) first, then by id: `beta * x`, `2 * y`.
            let leaf_first = |id: &Id<S>| (self.nodes[id.index()].op.arity() > 0, *id);
            args.sort_by_key(leaf_first);
        }
        let node = Node { op, args };
        if let Some(&id) = self.memo.get(&node) {
            return id;
        }
        let arg_tys: Vec<Ty> = node.args.iter().map(|a| self.ty(*a)).collect();
        let id = Id::new(self.nodes.len());
        self.tys.push(op.result_ty(&arg_tys));
        self.nodes.push(node.clone());
        self.memo.insert(node, id);
        id
    }

    /// A constant.
    pub fn constant(&mut self, x: f64) -> Id<S> {
        self.add(Op::constant(x), &[])
    }

    /// The node at `id`.
    pub fn node(&self, id: Id<S>) -> &Node<S> {
        &self.nodes[id.index()]
    }

    /// The op at `id`.
    pub fn op(&self, id: Id<S>) -> Op {
        self.nodes[id.index()].op
    }

    /// The result type of `id`.
    pub fn ty(&self, id: Id<S>) -> Ty {
        self.tys[id.index()]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the DAG has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Marks every node reachable from `roots` (the roots included).
    pub fn reachable(&self, roots: &[Id<S>]) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<Id<S>> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id.index()], true) {
                continue;
            }
            stack.extend(self.node(id).args.iter().copied());
        }
        seen
    }

    /// Every node's id, in topological (id) order.
    pub fn ids(&self) -> impl Iterator<Item = Id<S>> + use<S> {
        (0..self.nodes.len()).map(Id::new)
    }

    /// The same nodes as a DAG of stage `T`: how a stage takes over its input's DAG.
    pub(crate) fn into_stage<T: Stage>(self) -> Dag<T> {
        let rebrand = |n: Node<S>| Node {
            op: n.op,
            args: n.args.into_iter().map(Id::into_stage).collect(),
        };
        let memo = self
            .memo
            .into_iter()
            .map(|(n, id)| (rebrand(n), id.into_stage()))
            .collect();
        Dag {
            nodes: self.nodes.into_iter().map(rebrand).collect(),
            tys: self.tys,
            memo,
        }
    }

    /// Checks the invariants every pass must keep: operands precede users, operand counts
    /// and operand element types match each op's signature, and operand shapes suit the op.
    /// Returns a description of the first violation.
    pub fn verify(&self) -> Result<(), String> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.args.len() != node.op.arity() {
                return Err(format!(
                    "node %{i} ({}) has {} operands",
                    node.op.name(),
                    node.args.len()
                ));
            }
            let (want, _) = node.op.signature();
            for (k, a) in node.args.iter().enumerate() {
                if a.index() >= i {
                    return Err(format!("node %{i} uses later node {a}"));
                }
                if self.ty(*a).elem() != want[k] {
                    return Err(format!(
                        "node %{i} ({}) operand {k} is {} but {} is required",
                        node.op.name(),
                        self.ty(*a),
                        want[k]
                    ));
                }
            }
            let arg_tys: Vec<Ty> = node.args.iter().map(|a| self.ty(*a)).collect();
            if let Err(k) = node.op.operand_shapes_ok(&arg_tys) {
                return Err(format!(
                    "node %{i} ({}) operand {k} has the wrong shape ({})",
                    node.op.name(),
                    arg_tys[k]
                ));
            }
        }
        Ok(())
    }
}
