//! The checked objective: what `check` produces and every later stage starts from.

use crate::dag::{Dag, Id, Written};
use crate::ops::Ty;
use crate::source::Source;
use poc_grammar::diag::suggest;
use poc_grammar::{Diagnostic, ErrorKind, Range};

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// The default value.
    pub default: f64,
    /// The allowed range.
    pub range: Option<Range>,
    /// Its doc comment.
    pub docs: Vec<String>,
}

/// A declared input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Input {
    /// Its name (the key in `poc eval` rows).
    pub name: String,
    /// What the runtime computes for it.
    pub source: Source,
    /// Whether gradients flow to it.
    pub differentiable: bool,
    /// Its doc comment.
    pub docs: Vec<String>,
}

/// A named value: a `let` or a metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Binding {
    /// Its name.
    pub name: String,
    /// Its node.
    pub id: Id<Written>,
    /// Its type.
    pub ty: Ty,
}

/// A checked objective (`check`'s output): declarations plus the DAG of every value as
/// written. Every name is resolved, every value typed, every input has a source.
#[derive(Debug, Clone)]
pub struct Objective {
    /// The objective's name.
    pub name: String,
    /// Its doc comment (citation).
    pub docs: Vec<String>,
    /// Parameters, in declaration order (`Op::Param(i)` is `params[i]`).
    pub params: Vec<Param>,
    /// Inputs, in declaration order (`Op::Input(i)` is `inputs[i]`).
    pub inputs: Vec<Input>,
    /// `let` bindings in dependency order.
    pub lets: Vec<Binding>,
    /// Every value.
    pub dag: Dag<Written>,
    /// The per-example loss.
    pub loss: Id<Written>,
    /// Metrics in declaration order.
    pub metrics: Vec<Binding>,
}

impl Objective {
    /// The parameter defaults, in order.
    pub fn default_params(&self) -> Vec<f64> {
        self.params.iter().map(|p| p.default).collect()
    }

    /// Parameter values after `--set name=value` overrides, each checked against its range.
    pub fn params_with(&self, sets: &[String]) -> Result<Vec<f64>, Vec<Diagnostic>> {
        let mut values = self.default_params();
        let mut errors = Vec::new();
        for s in sets {
            let Some((name, value)) = s.split_once('=') else {
                errors.push(Diagnostic::global(
                    ErrorKind::BadSet,
                    format!("`--set {s}`: expected NAME=VALUE"),
                ));
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let Some(i) = self.params.iter().position(|p| p.name == name) else {
                let mut d = Diagnostic::global(
                    ErrorKind::BadSet,
                    format!(
                        "`--set {s}`: objective `{}` has no parameter `{name}`",
                        self.name
                    ),
                );
                let names = self.params.iter().map(|p| p.name.as_str());
                d = match suggest(name, names) {
                    Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                    None if self.params.is_empty() => d.with_hint("it has no parameters"),
                    None => d.with_hint(format!(
                        "its parameters are: {}",
                        self.params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                errors.push(d);
                continue;
            };
            let Some(x) = parse_number(value) else {
                errors.push(Diagnostic::global(
                    ErrorKind::BadSet,
                    format!("`--set {s}`: `{value}` is not a number"),
                ));
                continue;
            };
            if let Some(r) = &self.params[i].range
                && !r.contains(x)
            {
                errors.push(Diagnostic::global(
                    ErrorKind::BadSet,
                    format!("`--set {s}`: {name} must lie in {r}"),
                ));
                continue;
            }
            values[i] = x;
        }
        if errors.is_empty() {
            Ok(values)
        } else {
            Err(errors)
        }
    }
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|x| !x.is_nan()),
    }
}
