//! The canonical text form of an [`Ast`]: normalized spacing, minimal parentheses, one
//! statement per line. It parses back to the same tree (modulo spans), which the tests check.

use crate::ast::*;

/// A number as the language writes it: shortest form that reads back exactly; `inf`.
pub fn number(x: f64) -> String {
    if x == f64::INFINITY {
        "inf".into()
    } else if x == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{x}")
    }
}

/// The whole file in canonical form.
pub fn program(ast: &Ast) -> String {
    let mut out = String::new();
    for st in &ast.statements {
        for d in &st.docs {
            if d.is_empty() {
                out.push_str("///\n");
            } else {
                out.push_str(&format!("/// {d}\n"));
            }
        }
        out.push_str(&statement(&st.kind));
        out.push('\n');
    }
    out
}

/// One statement without its docs.
pub fn statement(kind: &StatementKind) -> String {
    match kind {
        StatementKind::Objective(n) => format!("objective {}", n.name),
        StatementKind::Use(u) => {
            let mut s = format!("use {}", u.target.text());
            if !u.bindings.is_empty() {
                let b: Vec<String> = u
                    .bindings
                    .iter()
                    .map(|(n, e)| format!("{} = {}", n.name, expr(e)))
                    .collect();
                s.push_str(&format!("({})", b.join(", ")));
            }
            if let Some(a) = &u.alias {
                s.push_str(&format!(" as {}", a.name));
            }
            if u.with_metrics {
                s.push_str(" with metrics");
            }
            s
        }
        StatementKind::Param {
            name,
            default,
            range,
            ..
        } => match range {
            Some(r) => format!("param {} = {} in {r}", name.name, number(*default)),
            None => format!("param {} = {}", name.name, number(*default)),
        },
        StatementKind::Input { name, source } => match source {
            Some(s) => format!("input {} from {}", name.name, source_text(s)),
            None => format!("input {}", name.name),
        },
        StatementKind::Let { name, value } => format!("let {} = {}", name.name, expr(value)),
        StatementKind::Loss(e) => format!("loss = {}", expr(e)),
        StatementKind::Metric { name, value } => format!("metric {} = {}", name.name, expr(value)),
    }
}

/// An input source as written.
pub fn source_text(s: &SourceExpr) -> String {
    match s {
        SourceExpr::Call { path, arg, .. } => format!("{path}({arg})"),
        SourceExpr::Path { path, .. } => path.clone(),
        SourceExpr::Column { name, .. } => format!("column(\"{name}\")"),
    }
}

/// Binding strength of each syntactic form, loosest first, mirroring po.pest: the one table
/// both printers (this one and the compiler's) parenthesize by.
pub mod strength {
    /// `if c then a else b`
    pub const IF: u8 = 0;
    /// `a or b`
    pub const OR: u8 = 1;
    /// `a and b`
    pub const AND: u8 = 2;
    /// `not a`
    pub const NOT: u8 = 3;
    /// comparisons
    pub const CMP: u8 = 4;
    /// `a + b`, `a - b`
    pub const ADD: u8 = 5;
    /// `a * b`, `a / b`
    pub const MUL: u8 = 6;
    /// `-a`
    pub const NEG: u8 = 7;
    /// `a ^ b`
    pub const POW: u8 = 8;
    /// names, numbers, calls, parenthesized expressions
    pub const ATOM: u8 = 9;
}
use strength::*;

fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::If(..) => IF,
        ExprKind::Unary(UnaryOp::Not, _) => NOT,
        ExprKind::Unary(UnaryOp::Neg, _) => NEG,
        ExprKind::Binary(op, ..) => binary_prec(*op),
        _ => ATOM,
    }
}

fn binary_prec(op: BinaryOp) -> u8 {
    use BinaryOp::*;
    match op {
        Or => OR,
        And => AND,
        Lt | Le | Gt | Ge | Eq | Ne => CMP,
        Add | Sub => ADD,
        Mul | Div => MUL,
        Pow => 8,
    }
}

/// An expression in canonical form.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number(x) => number(*x),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Call(f, args) => {
            let args: Vec<String> = args.iter().map(expr).collect();
            format!("{}({})", f.name, args.join(", "))
        }
        ExprKind::If(c, t, f) => format!("if {} then {} else {}", expr(c), expr(t), expr(f)),
        ExprKind::Unary(UnaryOp::Neg, x) => format!("-{}", wrap(x, NEG)),
        ExprKind::Unary(UnaryOp::Not, x) => format!("not {}", wrap(x, NOT)),
        ExprKind::Binary(op, l, r) => {
            let p = binary_prec(*op);
            let (lmin, rmin) = match op {
                BinaryOp::Pow => (ATOM, NEG),
                BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
                | BinaryOp::Eq
                | BinaryOp::Ne => (p + 1, p + 1),
                _ => (p, p + 1),
            };
            format!("{} {} {}", wrap(l, lmin), op.symbol(), wrap(r, rmin))
        }
    }
}

fn wrap(e: &Expr, min: u8) -> String {
    if prec(e) >= min {
        expr(e)
    } else {
        format!("({})", expr(e))
    }
}
