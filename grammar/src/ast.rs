//! The spanned syntax tree of a `.po` file, exactly as written (no name resolution).

use crate::diag::Span;
use serde::Serialize;

/// A name with its place in the source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ast {
    /// Statements in source order.
    pub statements: Vec<Statement>,
}

/// One statement with its doc comment (the `///` lines before it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    /// Doc comment lines, without the `///` and one leading space.
    pub docs: Vec<String>,
    /// What it declares.
    pub kind: StatementKind,
    /// The whole statement.
    pub span: Span,
}

/// The statements of the language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum StatementKind {
    /// `objective NAME`
    Objective(Ident),
    /// `use TARGET [(p = EXPR, ...)] [as ALIAS] [with metrics]`: another objective's loss,
    /// lets, parameters and (with `with metrics`) metrics, under `ALIAS.`.
    Use(Use),
    /// `param NAME = DEFAULT [in RANGE]`
    Param {
        /// Its name.
        name: Ident,
        /// The default value.
        default: f64,
        /// Where the default was written.
        default_span: Span,
        /// The allowed range, if given.
        range: Option<Range>,
    },
    /// `input NAME [from SOURCE]`
    Input {
        /// Its name.
        name: Ident,
        /// Where the value comes from, if written.
        source: Option<SourceExpr>,
    },
    /// `let NAME = EXPR`
    Let {
        /// Its name.
        name: Ident,
        /// Its value.
        value: Expr,
    },
    /// `loss = EXPR`
    Loss(Expr),
    /// `metric NAME = EXPR`
    Metric {
        /// Its name (may contain `/`).
        name: Ident,
        /// Its value.
        value: Expr,
    },
}

/// A `use` statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Use {
    /// What is used: a shipped objective's name, or a file path relative to this file.
    pub target: UseTarget,
    /// Parameters of the used objective bound to expressions of this one (`beta = beta`);
    /// the others become parameters `ALIAS.NAME` of this objective.
    pub bindings: Vec<(Ident, Expr)>,
    /// The name its values go by here (`dpo` in `dpo.loss`): the alias, else the shipped
    /// name, else the file's stem.
    pub alias: Option<Ident>,
    /// Whether its metrics become metrics of this objective under their own names.
    pub with_metrics: bool,
}

/// What a `use` names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum UseTarget {
    /// A shipped objective (`use dpo`).
    Name(Ident),
    /// A `.po` file, relative to the using file (`use "losses/mine.po"`).
    Path {
        /// The path as written.
        path: String,
        /// Where.
        span: Span,
    },
}

impl UseTarget {
    /// Where it was written.
    pub fn span(&self) -> Span {
        match self {
            UseTarget::Name(n) => n.span,
            UseTarget::Path { span, .. } => *span,
        }
    }

    /// As written (`dpo`, `"losses/mine.po"`).
    pub fn text(&self) -> String {
        match self {
            UseTarget::Name(n) => n.name.clone(),
            UseTarget::Path { path, .. } => format!("\"{path}\""),
        }
    }
}

impl Use {
    /// The name its values go by (`ALIAS.NAME`): the alias, else the shipped name, else the
    /// file's stem.
    pub fn alias(&self) -> String {
        if let Some(a) = &self.alias {
            return a.name.clone();
        }
        match &self.target {
            UseTarget::Name(n) => n.name.clone(),
            UseTarget::Path { path, .. } => {
                let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
                file.strip_suffix(".po").unwrap_or(file).to_string()
            }
        }
    }
}

/// `[lo, hi]`, `(lo, hi)` or mixed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    /// Lower bound (may be `-inf`).
    pub lo: f64,
    /// Whether `lo` itself is allowed.
    pub lo_closed: bool,
    /// Upper bound (may be `inf`).
    pub hi: f64,
    /// Whether `hi` itself is allowed.
    pub hi_closed: bool,
    /// Where it was written.
    pub span: Span,
}

impl Range {
    /// Whether `x` lies in the range.
    pub fn contains(&self, x: f64) -> bool {
        let above = if self.lo_closed {
            x >= self.lo
        } else {
            x > self.lo
        };
        let below = if self.hi_closed {
            x <= self.hi
        } else {
            x < self.hi
        };
        above && below
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.lo_closed { '[' } else { '(' },
            crate::print::number(self.lo),
            crate::print::number(self.hi),
            if self.hi_closed { ']' } else { ')' }
        )
    }
}

/// An input's source as written: `policy.logps(chosen)`, `vocab_size`, `column("x")`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SourceExpr {
    /// `a.b.c(arg)`
    Call {
        /// The dotted path.
        path: String,
        /// The argument (`chosen`/`rejected`).
        arg: String,
        /// Where.
        span: Span,
    },
    /// `a.b`
    Path {
        /// The dotted path.
        path: String,
        /// Where.
        span: Span,
    },
    /// `column("name")`
    Column {
        /// The column name.
        name: String,
        /// Where.
        span: Span,
    },
}

impl SourceExpr {
    /// Where it was written.
    pub fn span(&self) -> Span {
        match self {
            SourceExpr::Call { span, .. }
            | SourceExpr::Path { span, .. }
            | SourceExpr::Column { span, .. } => *span,
        }
    }
}

/// An expression with its span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where.
    pub span: Span,
}

/// Expression forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ExprKind {
    /// A number literal (`inf` included).
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A name.
    Name(String),
    /// A prefix operator.
    Unary(UnaryOp, Box<Expr>),
    /// An infix operator.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `f(args)`.
    Call(Ident, Vec<Expr>),
    /// `if c then a else b`.
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg,
    Not,
}

impl UnaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Not => "not",
        }
    }
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Pow => "^",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
}
