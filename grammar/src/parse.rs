//! Source text to [`Ast`]. The file is cut into statements at lines that begin with a
//! statement keyword; each is parsed on its own, so one broken statement does not hide the
//! errors of the others.

use crate::ast::*;
use crate::diag::{Diagnostic, ErrorKind, Span};
use pest::Parser;
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "po.pest"]
struct PoParser;

const STATEMENT_KEYWORDS: [&str; 7] = [
    "objective",
    "use",
    "param",
    "input",
    "let",
    "loss",
    "metric",
];

/// Parses a whole file. Returns every syntax error found, one per broken statement.
pub fn parse(src: &str) -> Result<Ast, Vec<Diagnostic>> {
    let parsed = parse_partial(src);
    if parsed.errors.is_empty() {
        Ok(parsed.ast)
    } else {
        Err(parsed.errors)
    }
}

/// A file parsed as far as it goes: the statements that parse, the syntax error of each one
/// that does not, and what those would have declared. A later stage checks the statements
/// that parse and reports their errors beside the syntax errors, without reporting the uses
/// of what a broken statement declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// The statements that parse, in order.
    pub ast: Ast,
    /// One syntax error per statement that does not parse.
    pub errors: Vec<Diagnostic>,
    /// Each statement that does not parse, as far as its first words tell.
    pub unparsed: Vec<Unparsed>,
}

/// A statement that does not parse, read from its first words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsed {
    /// Its keyword (`objective`, `use`, `param`, `input`, `let`, `loss`, `metric`); `None` for
    /// text that starts no statement.
    pub keyword: Option<&'static str>,
    /// What it names, when the words after the keyword say: `objective NAME`, `param NAME`,
    /// `input NAME`, `let NAME`, `metric NAME`, and for `use` the name its values would go by
    /// (the alias after `as`, else the objective's name or the file's stem).
    pub name: Option<String>,
}

/// Parses every statement that parses ([`Partial`]); never fails.
pub fn parse_partial(src: &str) -> Partial {
    let mut statements = Vec::new();
    let mut errors = Vec::new();
    let mut unparsed = Vec::new();
    for (start, end) in chunks(src) {
        let text = &src[start..end];
        match parse_chunk(text, start) {
            Ok(Some(stmt)) => statements.push(stmt),
            Ok(None) => {}
            Err(e) => {
                errors.push(e);
                unparsed.push(first_words(text));
            }
        }
    }
    Partial {
        ast: Ast { statements },
        errors,
        unparsed,
    }
}

/// The keyword of a statement that does not parse and the name it declares, as far as its
/// words say.
fn first_words(text: &str) -> Unparsed {
    let code = code_of(text);
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '/' || c == '.' || c == '"';
    let words: Vec<&str> = code
        .split(|c: char| !word(c))
        .filter(|w| !w.is_empty())
        .collect();
    let keyword = words
        .first()
        .and_then(|w| STATEMENT_KEYWORDS.iter().copied().find(|k| k == w));
    let ident = |w: &str| {
        w.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && w.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    let name = match keyword {
        Some("use") => match words.iter().position(|w| *w == "as") {
            Some(k) => words.get(k + 1).filter(|w| ident(w)).map(|w| w.to_string()),
            None => words.get(1).and_then(|t| match t.strip_prefix('"') {
                Some(path) => {
                    let path = path.strip_suffix('"').unwrap_or(path);
                    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
                    Some(file.strip_suffix(".po").unwrap_or(file).to_string())
                }
                None => ident(t).then(|| t.to_string()),
            }),
        },
        Some("loss") | None => None,
        Some("metric") => words.get(1).map(|w| w.to_string()),
        Some(_) => words.get(1).filter(|w| ident(w)).map(|w| w.to_string()),
    };
    Unparsed { keyword, name }
}

/// Byte ranges of the statements: each begins at the doc comment block (if any) before a line
/// that starts with a statement keyword. Text before the first such line is its own chunk.
fn chunks(src: &str) -> Vec<(usize, usize)> {
    let mut starts = vec![0];
    let mut doc_block_start: Option<usize> = None;
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("///") {
            doc_block_start.get_or_insert(offset);
        } else if starts_statement(trimmed) {
            let start = doc_block_start.unwrap_or(offset);
            if start != 0 {
                starts.push(start);
            }
            doc_block_start = None;
        } else if !trimmed.is_empty() && !trimmed.starts_with("//") {
            doc_block_start = None;
        }
        offset += line.len();
    }
    starts.dedup();
    let mut ranges: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    ranges.push((*starts.last().unwrap_or(&0), src.len()));
    ranges
}

fn starts_statement(line: &str) -> bool {
    STATEMENT_KEYWORDS.iter().any(|kw| {
        line.strip_prefix(kw)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    })
}

fn parse_chunk(text: &str, offset: usize) -> Result<Option<Statement>, Diagnostic> {
    if PoParser::parse(Rule::trivia_only, text).is_ok() {
        return Ok(None);
    }
    let mut pairs =
        PoParser::parse(Rule::statement_only, text).map_err(|e| syntax_error(e, text, offset))?;
    let pair = pairs.next().ok_or_else(|| {
        Diagnostic::new(
            ErrorKind::Syntax,
            Span::new(offset, offset),
            "expected a statement",
        )
    })?;
    Ok(Some(Builder { offset }.statement(pair)))
}

fn syntax_error(e: pest::error::Error<Rule>, text: &str, offset: usize) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    // An error at the end of the chunk belongs right after the statement's last character,
    // not at the start of the next statement.
    let content_end = statement_end(text);
    let pos = pos.min(content_end);
    let found = text[pos..]
        .split(|c: char| c.is_whitespace())
        .next()
        .filter(|t| !t.is_empty());
    let expected = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let found_text = match found {
        Some(t) => format!("found `{}`", t.chars().take(24).collect::<String>()),
        None => "found the end of the statement".to_string(),
    };
    let len = found.map(|t| t.len()).unwrap_or(0);
    let mut d = Diagnostic::new(
        ErrorKind::Syntax,
        Span::new(offset + pos, offset + pos + len),
        format!("expected {expected}, {found_text}"),
    );
    let opens = code_of(text).matches('(').count();
    let closes = code_of(text).matches(')').count();
    if found.is_none() && opens > closes {
        d = d.with_hint("this statement has an unclosed `(`");
    } else if pos == 0 && found.is_some() {
        d = d.with_hint(
            "every statement starts with `objective`, `use`, `param`, `input`, `let`, `loss` or `metric`",
        );
    } else if found.is_some_and(|t| t.starts_with('*')) && text[..pos].ends_with('*') {
        // `x ** y`: the parser took the first `*` as a product and stops at the second.
        d = d.with_hint("powers are written `x ^ y`");
    }
    d
}

/// Byte offset just past the last character of the statement that is not whitespace or a
/// comment.
fn statement_end(text: &str) -> usize {
    let mut end = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let code = code_of(line);
        let trimmed = code.trim_end();
        if !trimmed.is_empty() {
            end = offset + trimmed.len();
        }
        offset += line.len();
    }
    end
}

/// The text without `//` comments (doc comments included).
fn code_of(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect()
}

/// Plain words for what the parser wanted.
fn describe(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = Vec::new();
    for r in rules {
        let w = match r {
            Rule::expr
            | Rule::if_expr
            | Rule::or_expr
            | Rule::and_expr
            | Rule::not_expr
            | Rule::cmp_expr
            | Rule::add_expr
            | Rule::mul_expr
            | Rule::neg_expr
            | Rule::pow_expr
            | Rule::call
            | Rule::number
            | Rule::bool_lit
            | Rule::inf_lit => "an expression",
            Rule::ident | Rule::metric_name | Rule::qualified => "a name",
            Rule::use_target => "an objective's name or a quoted path",
            Rule::use_args | Rule::use_binding => "`(parameter = value, ...)`",
            Rule::use_alias => "`as NAME`",
            Rule::with_metrics => "`with metrics`",
            Rule::signed_number => "a number",
            Rule::range => "`in [lo, hi]`",
            Rule::range_open => "`[` or `(`",
            Rule::range_close => "`]` or `)`",
            Rule::source
            | Rule::column_src
            | Rule::call_src
            | Rule::path_src
            | Rule::source_path => "an input source",
            Rule::string => "a string",
            Rule::cmp_op
            | Rule::add_op
            | Rule::mul_op
            | Rule::pow_op
            | Rule::or_op
            | Rule::and_op => "an operator",
            Rule::EOI => "the end of the statement",
            Rule::objective_stmt
            | Rule::use_stmt
            | Rule::param_stmt
            | Rule::input_stmt
            | Rule::let_stmt
            | Rule::loss_stmt
            | Rule::metric_stmt
            | Rule::docs
            | Rule::doc_line => "a statement",
            _ => "something else",
        };
        if !words.contains(&w) {
            words.push(w);
        }
    }
    match words.len() {
        0 => "a statement".to_string(),
        1 => words[0].to_string(),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

struct Builder {
    offset: usize,
}

impl Builder {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.offset + s.start(), self.offset + s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn statement(&self, pair: Pair<Rule>) -> Statement {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        let docs = inner
            .next()
            .map(|d| {
                d.into_inner()
                    .map(|line| {
                        let t = line.into_inner().as_str();
                        t.strip_prefix(' ').unwrap_or(t).trim_end().to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut next = || inner.next().expect("grammar guarantees this child");
        let kind = match rule {
            Rule::objective_stmt => StatementKind::Objective(self.ident(next())),
            Rule::use_stmt => {
                let target = next();
                let target_span = self.span(&target);
                let target = target.into_inner().next().expect("a use target has a form");
                let target = match target.as_rule() {
                    Rule::string => UseTarget::Path {
                        path: target.into_inner().as_str().to_string(),
                        span: target_span,
                    },
                    _ => UseTarget::Name(self.ident(target)),
                };
                let mut u = Use {
                    target,
                    bindings: Vec::new(),
                    alias: None,
                    with_metrics: false,
                };
                for part in inner.by_ref() {
                    match part.as_rule() {
                        Rule::use_args => {
                            for b in part.into_inner() {
                                let mut it = b.into_inner();
                                let name = self.ident(it.next().expect("a binding has a name"));
                                let value = self.expr(it.next().expect("a binding has a value"));
                                u.bindings.push((name, value));
                            }
                        }
                        Rule::use_alias => {
                            let a = part.into_inner().next().expect("an alias has a name");
                            u.alias = Some(self.ident(a));
                        }
                        _ => u.with_metrics = true,
                    }
                }
                StatementKind::Use(u)
            }
            Rule::param_stmt => {
                let name = self.ident(next());
                let default_pair = next();
                let default_span = self.span(&default_pair);
                let default = number(default_pair.as_str());
                let range = inner.next().map(|r| self.range(r));
                StatementKind::Param {
                    name,
                    default,
                    default_span,
                    range,
                }
            }
            Rule::input_stmt => {
                let name = self.ident(next());
                let source = inner.next().map(|s| self.source(s));
                StatementKind::Input { name, source }
            }
            Rule::let_stmt => {
                let name = self.ident(next());
                StatementKind::Let {
                    name,
                    value: self.expr(next()),
                }
            }
            Rule::loss_stmt => StatementKind::Loss(self.expr(next())),
            Rule::metric_stmt => {
                let name = self.ident(next());
                StatementKind::Metric {
                    name,
                    value: self.expr(next()),
                }
            }
            other => unreachable!("not a statement rule: {other:?}"),
        };
        Statement { docs, kind, span }
    }

    fn range(&self, p: Pair<Rule>) -> Range {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let mut next = || it.next().expect("grammar guarantees range parts");
        let lo_closed = next().as_str() == "[";
        let lo = number(next().as_str());
        let hi = number(next().as_str());
        let hi_closed = next().as_str() == "]";
        Range {
            lo,
            lo_closed,
            hi,
            hi_closed,
            span,
        }
    }

    fn source(&self, p: Pair<Rule>) -> SourceExpr {
        let inner = p
            .into_inner()
            .next()
            .expect("grammar guarantees a source form");
        let span = self.span(&inner);
        match inner.as_rule() {
            Rule::column_src => {
                let s = inner.into_inner().next().expect("column has a string");
                let name = s.into_inner().as_str().to_string();
                SourceExpr::Column { name, span }
            }
            Rule::call_src => {
                let mut it = inner.into_inner();
                let path = it
                    .next()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let arg = it
                    .next()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                SourceExpr::Call { path, arg, span }
            }
            _ => SourceExpr::Path {
                path: inner.as_str().to_string(),
                span,
            },
        }
    }

    fn expr(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::expr => self.expr(p.into_inner().next().expect("expr has a child")),
            Rule::if_expr => {
                let mut it = p.into_inner().map(|e| Box::new(self.expr(e)));
                let mut next = || it.next().expect("if has three parts");
                let (c, t, e) = (next(), next(), next());
                Expr {
                    kind: ExprKind::If(c, t, e),
                    span,
                }
            }
            Rule::or_expr | Rule::and_expr | Rule::add_expr | Rule::mul_expr => self.left_assoc(p),
            Rule::cmp_expr => self.left_assoc(p),
            Rule::not_expr | Rule::neg_expr => {
                let mut ops = Vec::new();
                let mut operand = None;
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::not_op | Rule::neg_op => ops.push((c.as_rule(), self.span(&c))),
                        _ => operand = Some(self.expr(c)),
                    }
                }
                let mut e = operand.expect("prefix expression has an operand");
                for (op, op_span) in ops.into_iter().rev() {
                    let op = if op == Rule::not_op {
                        UnaryOp::Not
                    } else {
                        UnaryOp::Neg
                    };
                    let span = op_span.join(e.span);
                    e = Expr {
                        kind: ExprKind::Unary(op, Box::new(e)),
                        span,
                    };
                }
                e
            }
            Rule::pow_expr => {
                let mut it = p.into_inner();
                let base = self.expr(it.next().expect("pow has a base"));
                match (it.next(), it.next()) {
                    (Some(_op), Some(exp)) => {
                        let exp = self.expr(exp);
                        Expr {
                            kind: ExprKind::Binary(BinaryOp::Pow, Box::new(base), Box::new(exp)),
                            span,
                        }
                    }
                    _ => base,
                }
            }
            Rule::call => {
                let mut it = p.into_inner();
                let name = self.ident(it.next().expect("call has a name"));
                let args = it.map(|a| self.expr(a)).collect();
                Expr {
                    kind: ExprKind::Call(name, args),
                    span,
                }
            }
            Rule::number => Expr {
                kind: ExprKind::Number(number(p.as_str())),
                span,
            },
            Rule::inf_lit => Expr {
                kind: ExprKind::Number(f64::INFINITY),
                span,
            },
            Rule::bool_lit => Expr {
                kind: ExprKind::Bool(p.as_str() == "true"),
                span,
            },
            Rule::ident | Rule::qualified => Expr {
                kind: ExprKind::Name(p.as_str().to_string()),
                span,
            },
            other => unreachable!("not an expression rule: {other:?}"),
        }
    }

    fn left_assoc(&self, p: Pair<Rule>) -> Expr {
        let mut it = p.into_inner();
        let mut lhs = self.expr(it.next().expect("operand"));
        while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
            let op = binary_op(op.as_str());
            let rhs = self.expr(rhs);
            let span = lhs.span.join(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        lhs
    }
}

fn binary_op(s: &str) -> BinaryOp {
    match s {
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        "^" => BinaryOp::Pow,
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "and" => BinaryOp::And,
        "or" => BinaryOp::Or,
        other => unreachable!("grammar admits no operator `{other}`"),
    }
}

/// Numbers as the grammar admits them (`inf`, `-inf`, decimals, exponents).
fn number(s: &str) -> f64 {
    match s {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}
