//! Text forms of the checked objective and its gradient: `--emit typed`, `--emit grad`,
//! and `poc explain` (plain or LaTeX). Expressions print in the language's own syntax with
//! minimal parentheses; nodes bound by a `let` print as that name, and the checker's expansions
//! of `clamp` and `masked_mean` print as those calls again.

use crate::Compiled;
use crate::check::Function;
use crate::dag::{Dag, Derived, Id, Stage, Written};
use crate::grad::Partial;
use crate::objective::Objective;
use crate::ops::{Op, Syntax};
use poc_grammar::print::strength::*;
use std::collections::HashMap;

/// How expressions are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The `.po` syntax.
    Source,
    /// LaTeX math.
    Latex,
}

/// Prints nodes of one DAG, naming leaves and bound nodes.
pub struct Printer<'a, S: Stage> {
    dag: &'a Dag<S>,
    names: HashMap<Id<S>, String>,
    inputs: Vec<String>,
    params: Vec<String>,
    style: Style,
}

impl<'a, S: Stage> Printer<'a, S> {
    /// A printer for `dag`, with `names` for bound nodes.
    pub fn new(dag: &'a Dag<S>, obj: &Objective, names: &[(String, Id<S>)], style: Style) -> Self {
        let mut map = HashMap::new();
        for (n, id) in names {
            // The first binding of a node names it (`let a = b` makes `a` an alias).
            map.entry(*id).or_insert_with(|| n.clone());
        }
        Printer {
            dag,
            names: map,
            inputs: obj.inputs.iter().map(|i| i.name.clone()).collect(),
            params: obj.params.iter().map(|p| p.name.clone()).collect(),
            style,
        }
    }

    /// Adds or replaces a name.
    pub fn name(&mut self, id: Id<S>, name: String) {
        self.names.insert(id, name);
    }

    /// `id` written out one level (its own name is not used, its operands' are).
    pub fn definition(&self, id: Id<S>) -> String {
        self.expr(id, false).0
    }

    /// `id` as an operand: its name if it has one.
    pub fn reference(&self, id: Id<S>) -> String {
        self.expr(id, true).0
    }

    fn ident(&self, n: &str) -> String {
        match self.style {
            Style::Source => n.to_string(),
            Style::Latex => {
                let greek = [
                    "beta", "gamma", "tau", "theta", "rho", "sigma", "delta", "epsilon", "phi",
                ];
                if greek.contains(&n) {
                    format!("\\{n}")
                } else if n.chars().count() == 1 {
                    n.to_string()
                } else {
                    format!("\\mathrm{{{}}}", n.replace('_', "\\_"))
                }
            }
        }
    }

    /// The function the checker expanded into `id`, with its arguments, when `id` still has
    /// that expansion's shape and no part of it is named: `min(max(x, lo), hi)` is
    /// `clamp(x, lo, hi)`, `masked_sum(x, m) / masked_sum(1, m)` is `masked_mean(x, m)`.
    fn sugar(&self, id: Id<S>) -> Option<(Function, Vec<Id<S>>)> {
        let node = self.dag.node(id);
        let unnamed = |x: Id<S>| !self.names.contains_key(&x);
        match node.op {
            Op::Min => {
                let (inner, hi) = (node.args[0], node.args[1]);
                let max = self.dag.node(inner);
                (max.op == Op::Max && unnamed(inner))
                    .then(|| (Function::Clamp, vec![max.args[0], max.args[1], hi]))
            }
            Op::Div => {
                let (total, count) = (self.dag.node(node.args[0]), self.dag.node(node.args[1]));
                (total.op == Op::MaskedSum
                    && count.op == Op::MaskedSum
                    && self.dag.op(count.args[0]).const_value() == Some(1.0)
                    && total.args[1] == count.args[1]
                    && unnamed(node.args[0])
                    && unnamed(node.args[1]))
                .then(|| (Function::MaskedMean, vec![total.args[0], total.args[1]]))
            }
            _ => None,
        }
    }

    fn expr(&self, id: Id<S>, use_name: bool) -> (String, u8) {
        if use_name && let Some(n) = self.names.get(&id) {
            return (self.ident(n), ATOM);
        }
        let latex = self.style == Style::Latex;
        if let Some((function, args)) = self.sugar(id) {
            let args: Vec<String> = args.iter().map(|a| self.expr(*a, true).0).collect();
            let name = function.name();
            return if latex {
                let name = name.replace('_', "\\_");
                (
                    format!("\\operatorname{{{name}}}\\left({}\\right)", args.join(", ")),
                    ATOM,
                )
            } else {
                (format!("{name}({})", args.join(", ")), ATOM)
            };
        }
        let node = self.dag.node(id);
        let arg = |k: usize, min: u8| -> String {
            let (s, p) = self.expr(node.args[k], true);
            if p >= min {
                s
            } else if latex {
                format!("\\left({s}\\right)")
            } else {
                format!("({s})")
            }
        };
        let full = |k: usize| self.expr(node.args[k], true).0;
        let call = |op: Op| -> String {
            let args: Vec<String> = (0..node.args.len()).map(full).collect();
            if latex {
                format!("{}\\left({}\\right)", latex_function(op), args.join(", "))
            } else {
                format!("{}({})", op.name(), args.join(", "))
            }
        };
        // Operators are spelled as the grammar spells them.
        let symbol = || match node.op.syntax() {
            Syntax::Infix(b) => b.symbol(),
            Syntax::Prefix(u) => u.symbol(),
            _ => unreachable!("only operators have a symbol"),
        };
        use Op::*;
        match node.op {
            Const(bits) => {
                let x = f64::from_bits(bits);
                let s = poc_grammar::print::number(x);
                let s = if latex && x.is_infinite() {
                    s.replace("inf", "\\infty")
                } else {
                    s
                };
                (s, if x < 0.0 { NEG } else { ATOM })
            }
            BoolConst(b) => (b.to_string(), ATOM),
            Input(k) | TokenInput(k) => (self.ident(&self.inputs[k as usize]), ATOM),
            Param(k) => (self.ident(&self.params[k as usize]), ATOM),
            Neg => (format!("{}{}", symbol(), arg(0, NEG)), NEG),
            Add | Sub => (
                format!("{} {} {}", arg(0, ADD), symbol(), arg(1, ADD + 1)),
                ADD,
            ),
            Mul if latex => (format!("{} \\cdot {}", arg(0, MUL), arg(1, MUL + 1)), MUL),
            Mul => (
                format!("{} {} {}", arg(0, MUL), symbol(), arg(1, MUL + 1)),
                MUL,
            ),
            Div if latex => (format!("\\frac{{{}}}{{{}}}", full(0), full(1)), ATOM),
            Div => (
                format!("{} {} {}", arg(0, MUL), symbol(), arg(1, MUL + 1)),
                MUL,
            ),
            Pow if latex => (format!("{{{}}}^{{{}}}", arg(0, ATOM), full(1)), POW),
            Pow => (
                format!("{} {} {}", arg(0, ATOM), symbol(), arg(1, NEG)),
                POW,
            ),
            Sqrt if latex => (format!("\\sqrt{{{}}}", full(0)), ATOM),
            Abs if latex => (format!("\\left|{}\\right|", full(0)), ATOM),
            Select if latex => (
                format!(
                    "\\begin{{cases}} {} & \\text{{if }} {} \\\\ {} & \\text{{otherwise}} \\end{{cases}}",
                    full(1),
                    full(0),
                    full(2)
                ),
                ATOM,
            ),
            Select => (
                format!("if {} then {} else {}", full(0), full(1), full(2)),
                IF,
            ),
            Lt | Le | Gt | Ge | Eq | Ne => {
                let sym = match (node.op, latex) {
                    (Le, true) => "\\le",
                    (Ge, true) => "\\ge",
                    (Ne, true) => "\\ne",
                    _ => symbol(),
                };
                (
                    format!("{} {sym} {}", arg(0, CMP + 1), arg(1, CMP + 1)),
                    CMP,
                )
            }
            And => (
                format!("{} {} {}", arg(0, AND), symbol(), arg(1, AND + 1)),
                AND,
            ),
            Or => (
                format!("{} {} {}", arg(0, OR), symbol(), arg(1, OR + 1)),
                OR,
            ),
            Not => (format!("{} {}", symbol(), arg(0, NOT)), NOT),
            Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sign | Sigmoid | LogSigmoid | Softplus
            | Tanh | Relu | Min | Max | StopGrad | Broadcast | Sum | MaskedSum | LastToken
            | Gae | Whiten | SortBy | Unsort => (call(node.op), ATOM),
        }
    }
}

/// An op written as a function, in LaTeX: the standard functions as TeX writes them,
/// `\operatorname{name}` for the rest.
fn latex_function(op: Op) -> String {
    use Op::*;
    let tex = match op {
        Exp => "\\exp",
        Log => "\\log",
        Tanh => "\\tanh",
        Min => "\\min",
        Max => "\\max",
        Sigmoid => "\\sigma",
        LogSigmoid => "\\log\\sigma",
        Const(_) | BoolConst(_) | Input(_) | TokenInput(_) | Param(_) | Neg | Add | Sub | Mul
        | Div | Pow | Log1p | Expm1 | Sqrt | Abs | Sign | Softplus | Relu | StopGrad | Lt | Le
        | Gt | Ge | Eq | Ne | And | Or | Not | Select | Broadcast | Sum | MaskedSum | LastToken
        | Gae | Whiten | SortBy | Unsort => {
            return format!("\\operatorname{{{}}}", op.name().replace('_', "\\_"));
        }
    };
    tex.to_string()
}

/// Names shared non-leaf subexpressions (used twice or more under `roots`, not already
/// named) `t1`, `t2`, … in topological order, so printed gradients stay small.
pub fn name_shared<S: Stage>(p: &mut Printer<S>, dag: &Dag<S>, roots: &[Id<S>]) -> Vec<Id<S>> {
    let mut uses = vec![0usize; dag.len()];
    let mut seen = vec![false; dag.len()];
    let mut stack: Vec<Id<S>> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        if p.names.contains_key(&id) && !roots.contains(&id) {
            continue;
        }
        for a in &dag.node(id).args {
            uses[a.index()] += 1;
            stack.push(*a);
        }
    }
    let mut temps = Vec::new();
    for (id, &n_uses) in dag.ids().zip(&uses) {
        let node = dag.node(id);
        let trivial =
            node.args.is_empty() || (node.op == Op::Neg && dag.node(node.args[0]).args.is_empty());
        if n_uses >= 2 && !trivial && !p.names.contains_key(&id) {
            temps.push(id);
            p.name(id, format!("t{}", temps.len()));
        }
    }
    temps
}

/// Bound names (lets) reachable from `roots`, in topological order, each once.
fn used_lets<S: Stage>(
    p: &Printer<S>,
    dag: &Dag<S>,
    roots: &[Id<S>],
    lets: &[(String, Id<S>)],
) -> Vec<(String, Id<S>)> {
    let live = dag.reachable(roots);
    let mut out: Vec<(String, Id<S>)> = lets
        .iter()
        .filter(|(n, id)| live[id.index()] && p.names.get(id) == Some(n))
        .cloned()
        .collect();
    out.sort_by_key(|(_, id)| *id);
    out
}

fn range_text(p: &crate::Param) -> String {
    p.range.map(|r| format!(" in {r}")).unwrap_or_default()
}

/// `--emit typed`: the resolved declarations with types and sources.
pub fn typed(obj: &Objective) -> String {
    let names: Vec<(String, Id<Written>)> =
        obj.lets.iter().map(|l| (l.name.clone(), l.id)).collect();
    let p = Printer::new(&obj.dag, obj, &names, Style::Source);
    let mut s = format!("objective {}\n", obj.name);
    for (i, prm) in obj.params.iter().enumerate() {
        s.push_str(&format!(
            "param #{i} {}: num = {}{}\n",
            prm.name,
            poc_grammar::print::number(prm.default),
            range_text(prm)
        ));
    }
    for (i, inp) in obj.inputs.iter().enumerate() {
        let d = if inp.differentiable {
            "differentiable"
        } else {
            "constant"
        };
        s.push_str(&format!(
            "input #{i} {}: {} from {} ({d})\n",
            inp.name,
            inp.source.ty(),
            inp.source.text()
        ));
    }
    for l in &obj.lets {
        s.push_str(&format!(
            "let {}: {} = {}\n",
            l.name,
            l.ty,
            p.definition(l.id)
        ));
    }
    s.push_str(&format!("loss: num = {}\n", p.reference(obj.loss)));
    for m in &obj.metrics {
        s.push_str(&format!(
            "metric {}: {} = {}\n",
            m.name,
            m.ty,
            p.reference(m.id)
        ));
    }
    s
}

/// `--emit grad`: simplified loss and gradients with shared terms named, and the rewrite trace.
pub fn grad(c: &Compiled) -> String {
    let obj = &c.objective;
    let g = &c.gradient;
    let mut p = Printer::new(&g.dag, obj, &g.lets, Style::Source);
    let mut roots = vec![g.loss];
    roots.extend(g.grads.iter().map(|p| p.id));
    let mut s = String::new();
    let trace: Vec<String> = c.trace.iter().map(|(r, n)| format!("{r} x{n}")).collect();
    s.push_str(&format!(
        "rewrites: {}\n",
        if trace.is_empty() {
            "none".into()
        } else {
            trace.join(", ")
        }
    ));
    let lets = used_lets(&p, &g.dag, &roots, &g.lets);
    let mut let_roots = roots.clone();
    let_roots.extend(lets.iter().map(|l| l.1));
    let temps = name_shared(&mut p, &g.dag, &let_roots);
    // Definitions in topological order, lets and temporaries interleaved.
    let mut defs: Vec<(String, Id<Derived>)> = lets;
    defs.extend(temps.iter().map(|&t| (p.reference(t), t)));
    defs.sort_by_key(|d| d.1);
    for (n, id) in &defs {
        s.push_str(&format!("let {n} = {}\n", p.definition(*id)));
    }
    s.push_str(&format!("loss = {}\n", p.reference(g.loss)));
    for &Partial { input: k, id } in &g.grads {
        s.push_str(&format!(
            "d loss / d {} = {}\n",
            obj.inputs[k as usize].name,
            p.reference(id)
        ));
    }
    s
}

/// `poc explain`: parameters, inputs, the definitions and loss as written, the simplified
/// gradient (shared terms named `t1`, `t2`, …) and the metrics, as math.
pub fn explain(c: &Compiled, style: Style) -> String {
    let obj = &c.objective;
    let latex = style == Style::Latex;
    let eq = |lhs: String, rhs: String| {
        if latex {
            format!("  {lhs} &= {rhs} \\\\\n")
        } else {
            format!("  {lhs} = {rhs}\n")
        }
    };
    let mut s = String::new();
    s.push_str(&format!("objective {}\n", obj.name));
    for d in &obj.docs {
        s.push_str(&format!("  {d}\n"));
    }
    if !obj.params.is_empty() {
        s.push_str("\nparameters (override with --set NAME=VALUE):\n");
        let width = obj
            .params
            .iter()
            .map(|p| p.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(18);
        for prm in &obj.params {
            s.push_str(&format!(
                "  {:<width$} = {}{}\n",
                prm.name,
                poc_grammar::print::number(prm.default),
                range_text(prm)
            ));
        }
    }
    s.push_str("\ninputs:\n");
    let width = obj
        .inputs
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    let src_width = obj
        .inputs
        .iter()
        .map(|i| i.source.text().chars().count())
        .max()
        .unwrap_or(0)
        .max(28);
    for inp in &obj.inputs {
        let d = if inp.differentiable {
            "differentiable"
        } else {
            "constant"
        };
        s.push_str(&format!(
            "  {:<width$} {:<src_width$} {d}\n",
            inp.name,
            inp.source.text()
        ));
    }

    // Definitions, loss and metrics as the user wrote them.
    let written: Vec<(String, Id<Written>)> =
        obj.lets.iter().map(|l| (l.name.clone(), l.id)).collect();
    let p = Printer::new(&obj.dag, obj, &written, style);
    if !obj.lets.is_empty() {
        s.push_str("\nwhere:\n");
        for l in &obj.lets {
            s.push_str(&eq(p.ident(&l.name), p.definition(l.id)));
        }
    }
    s.push_str("\nloss:\n");
    s.push_str(&eq(
        if latex {
            "\\mathcal{L}".into()
        } else {
            "loss".into()
        },
        p.reference(obj.loss),
    ));

    // The gradient after simplification, over the same names.
    let gradient = &c.gradient;
    let mut g = Printer::new(&gradient.dag, obj, &gradient.lets, style);
    let roots: Vec<Id<Derived>> = gradient.grads.iter().map(|p| p.id).collect();
    let temps = name_shared(&mut g, &gradient.dag, &roots);
    s.push_str("\ngradient:\n");
    for &Partial { input: k, id } in &gradient.grads {
        let name = &obj.inputs[k as usize].name;
        let lhs = if latex {
            format!(
                "\\frac{{\\partial \\mathcal{{L}}}}{{\\partial {}}}",
                g.ident(name)
            )
        } else {
            format!("d loss / d {name}")
        };
        s.push_str(&eq(lhs, g.reference(id)));
    }
    if !temps.is_empty() {
        s.push_str("  with\n");
        for t in temps {
            s.push_str(&eq(g.reference(t), g.definition(t)));
        }
    }
    if !obj.metrics.is_empty() {
        s.push_str("\nmetrics (batch mean):\n");
        for m in &obj.metrics {
            let lhs = if latex {
                format!("\\text{{{}}}", m.name)
            } else {
                m.name.clone()
            };
            s.push_str(&eq(lhs, p.reference(m.id)));
        }
    }
    s
}
