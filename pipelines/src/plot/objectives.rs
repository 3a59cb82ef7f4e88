//! Objectives: the loss L(Δ) and its derivative dL/dΔ against the reward margin Δ, sampled
//! on the f64 interpreter (the derivative is the compiler's symbolic gradient).

use super::draw::{Area, FONT, Series, draw_error, panel, render};
use super::{PlotOptions, parse_range, parse_size};
use crate::{Error, Result};
use plotters::prelude::*;
use poc_compiler::{Compiled, OutputKind, Side, Source};
use std::path::PathBuf;

/// Held value of a log-prob input at Δ = 0 (the policy equals the reference there).
const HELD_LOGPS: f64 = -50.0;

/// Where an input sits when nobody says otherwise; `None` for dataset columns poc knows
/// nothing about (the user must give them with --at).
fn held_default(source: &Source) -> Option<f64> {
    Some(match source {
        Source::PolicyLogps(_) | Source::ReferenceLogps(_) => HELD_LOGPS,
        Source::Reward(_) => 0.0,
        Source::Tokens(_) => 1.0,
        Source::ReferenceEntropy(_) => 2.0,
        Source::VocabSize => 128_256.0,
        Source::Column(c) if c == "score_chosen" => 1.0,
        Source::Column(c) if c == "score_rejected" => 0.0,
        _ => return None,
    })
}

/// The side a differentiable input moves with Δ on (`None`: held constant).
fn swept_side(source: &Source) -> Option<Side> {
    match source {
        Source::PolicyLogps(s) | Source::Reward(s) => Some(*s),
        _ => None,
    }
}

/// One objective's sampled curves.
struct Curve {
    /// Objective name (the CSV's first column).
    name: String,
    /// Legend text: name and parameter values.
    label: String,
    loss: Vec<f64>,
    slope: Vec<f64>,
    /// `name=value` of each held input, for the figure's footnote.
    held: Vec<String>,
}

/// A `[OBJECTIVE.]NAME=VALUE` flag value, split.
struct Scoped<'a> {
    flag: &'static str,
    raw: &'a str,
    scope: Option<&'a str>,
    name: &'a str,
    value: &'a str,
}

fn parse_scoped<'a>(flag: &'static str, raw: &'a str) -> Result<Scoped<'a>> {
    let Some((lhs, value)) = raw.split_once('=') else {
        return Err(Error::User(format!(
            "poc: `{flag} {raw}`: expected [OBJECTIVE.]NAME=VALUE\n"
        )));
    };
    let (scope, name) = match lhs.split_once('.') {
        Some((s, n)) => (Some(s.trim()), n.trim()),
        None => (None, lhs.trim()),
    };
    Ok(Scoped {
        flag,
        raw,
        scope,
        name,
        value: value.trim(),
    })
}

/// Checks that every scoped flag was used by some objective; explains the ones that were not.
fn unused_flags(
    flags: &[Scoped],
    used: &[bool],
    objective_names: &[&str],
    what: &str,
    names_of: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    let mut msg = String::new();
    for (f, _) in flags.iter().zip(used).filter(|(_, u)| !**u) {
        match f.scope {
            Some(s) if !objective_names.contains(&s) => msg.push_str(&format!(
                "poc: `{} {}`: no objective `{s}` in this plot (it has: {})\n",
                f.flag,
                f.raw,
                objective_names.join(", ")
            )),
            _ => {
                let scopes: Vec<&str> = match f.scope {
                    Some(s) => vec![s],
                    None => objective_names.to_vec(),
                };
                let known: Vec<String> = scopes.iter().flat_map(|s| names_of(s)).collect();
                let hint = poc_grammar::diag::suggest(f.name, known.iter().map(|s| s.as_str()))
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("the {what}s are: {}", known.join(", ")));
                msg.push_str(&format!(
                    "poc: `{} {}`: no plotted objective has a {what} `{}`\n  = hint: {hint}\n",
                    f.flag, f.raw, f.name
                ));
            }
        }
    }
    if msg.is_empty() {
        Ok(())
    } else {
        Err(Error::User(msg))
    }
}

/// Draws the objectives `compiled` (loss and dL/dΔ against Δ) as `args` asks; returns the
/// PNG written.
pub fn plot(compiled: &[Compiled], args: &PlotOptions) -> Result<PathBuf> {
    let (lo, hi) = parse_range("--range", &args.range)?;
    if args.points < 2 {
        return Err(Error::User(format!(
            "poc: `--points {}`: need at least 2 samples\n",
            args.points
        )));
    }
    let loss_axis = args
        .loss_axis
        .as_deref()
        .map(|t| parse_range("--loss-axis", t))
        .transpose()?;
    let grad_axis = args
        .grad_axis
        .as_deref()
        .map(|t| parse_range("--grad-axis", t))
        .transpose()?;
    let size = parse_size(args.size.as_deref(), (1000, 800))?;

    let names: Vec<&str> = compiled.iter().map(|c| c.objective.name.as_str()).collect();
    let sets = args
        .sets
        .iter()
        .map(|s| parse_scoped("--set", s))
        .collect::<Result<Vec<_>, _>>()?;
    let ats = args
        .at
        .iter()
        .map(|s| parse_scoped("--at", s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut set_used = vec![false; sets.len()];
    let mut at_used = vec![false; ats.len()];
    let n = args.points;
    let deltas: Vec<f64> = (0..n)
        .map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64)
        .collect();

    let mut curves = Vec::new();
    for c in compiled {
        curves.push(sample(
            c,
            &deltas,
            &sets,
            &mut set_used,
            &ats,
            &mut at_used,
        )?);
    }
    let params_of = |obj: &str| -> Vec<String> {
        compiled
            .iter()
            .filter(|c| c.objective.name == obj)
            .flat_map(|c| c.objective.params.iter().map(|p| p.name.clone()))
            .collect()
    };
    unused_flags(&sets, &set_used, &names, "parameter", params_of)?;
    let inputs_of = |obj: &str| -> Vec<String> {
        compiled
            .iter()
            .filter(|c| c.objective.name == obj)
            .flat_map(|c| c.objective.inputs.iter().map(|i| i.name.clone()))
            .collect()
    };
    unused_flags(&ats, &at_used, &names, "input", inputs_of)?;

    for curve in &curves {
        let bad = curve
            .loss
            .iter()
            .zip(&curve.slope)
            .filter(|(l, s)| !l.is_finite() || !s.is_finite())
            .count();
        if bad == n {
            return Err(Error::User(format!(
                "poc: {}: the loss is NaN or infinite at every Δ in [{lo}, {hi}]\n  = hint: move the held inputs with --at, or the interval with --range\n",
                curve.name
            )));
        }
        if bad > 0 {
            eprintln!(
                "poc: warning: {}: the loss or its gradient is not finite at {bad} of {n} values of Δ (gaps in the plot)",
                curve.name
            );
        }
    }

    if let Some(csv) = &args.csv {
        let mut text = String::from("objective,delta,loss,dloss_ddelta\n");
        for curve in &curves {
            for ((d, l), s) in deltas.iter().zip(&curve.loss).zip(&curve.slope) {
                text.push_str(&format!("{},{d},{l},{s}\n", curve.name));
            }
        }
        std::fs::write(csv, text)
            .map_err(|e| Error::User(format!("poc: cannot write `{}`: {e}\n", csv.display())))?;
    }

    if args.normalize {
        let zero = (0..n)
            .min_by(|&a, &b| deltas[a].abs().total_cmp(&deltas[b].abs()))
            .unwrap_or(0);
        for curve in &mut curves {
            for ys in [&mut curve.loss, &mut curve.slope] {
                let scale = ys[zero].abs();
                if scale.is_finite() && scale > 0.0 {
                    ys.iter_mut().for_each(|y| *y /= scale);
                }
            }
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("plot.png"));
    let mut held: Vec<String> = Vec::new();
    for h in curves.iter().flat_map(|c| &c.held) {
        if !held.contains(h) {
            held.push(h.clone());
        }
    }
    let figure = ObjectiveFigure {
        deltas: &deltas,
        curves: &curves,
        loss_axis,
        grad_axis,
        normalized: args.normalize,
        footnote: format!(
            "policy log-probs and rewards: chosen +Δ/2, rejected −Δ/2 (policy = reference at Δ = 0); held: {}",
            if held.is_empty() {
                "nothing".to_string()
            } else {
                held.join(", ")
            }
        ),
    };
    render(&out, size, |root| figure.draw(root))?;
    Ok(out)
}

/// Whether a scoped flag is meant for objective `objective`, which has `names`: its scope is
/// that objective, or it has no scope and names one of `names`.
fn applies<'a>(f: &Scoped, objective: &str, mut names: impl Iterator<Item = &'a str>) -> bool {
    match f.scope {
        Some(s) => s == objective,
        None => names.any(|n| n == f.name),
    }
}

/// Runs one objective's program over the Δ grid.
fn sample(
    c: &Compiled,
    deltas: &[f64],
    sets: &[Scoped],
    set_used: &mut [bool],
    ats: &[Scoped],
    at_used: &mut [bool],
) -> Result<Curve> {
    let obj = &c.objective;
    if let Some(i) = obj.inputs.iter().find(|i| i.source.ty().is_token()) {
        return Err(Error::User(format!(
            "poc: {}: input `{}` ({}) is per token, so the loss has no single margin to sweep; `poc plot` draws pairwise objectives of per-example inputs (evaluate this one on token rows with `poc eval`)\n",
            obj.name,
            i.name,
            i.source.text()
        )));
    }
    // Δ exists only between a chosen and a rejected completion: every differentiable input must
    // belong to one of them (on-policy rollout observables, for one, do not).
    if let Some(i) = obj
        .inputs
        .iter()
        .find(|i| i.differentiable && swept_side(&i.source).is_none())
    {
        return Err(Error::User(format!(
            "poc: {}: input `{}` ({}) belongs to neither a chosen nor a rejected completion; `poc plot` draws pairwise objectives, whose loss has a reward margin Δ\n",
            obj.name,
            i.name,
            i.source.text()
        )));
    }
    if !obj.inputs.iter().any(|i| swept_side(&i.source).is_some()) {
        return Err(Error::User(format!(
            "poc: {}: no policy log-prob or reward input of a chosen or rejected completion; `poc plot` draws pairwise objectives, whose loss has a reward margin Δ\n",
            obj.name
        )));
    }

    // Parameters: the objective's own checks (names, numbers, ranges) on the flags for it.
    let mut mine = Vec::new();
    for (f, used) in sets.iter().zip(set_used.iter_mut()) {
        if applies(f, &obj.name, obj.params.iter().map(|p| p.name.as_str())) {
            *used = true;
            mine.push(format!("{}={}", f.name, f.value));
        }
    }
    let params = obj
        .params_with(&mine)
        .map_err(|d| Error::User(poc_grammar::diag::render_all(&d, "poc", "")))?;

    // Inputs: --at first, then the reference of the same side for policy log-probs, then the
    // defaults.
    let mut value: Vec<Option<f64>> = vec![None; obj.inputs.len()];
    for (f, used) in ats.iter().zip(at_used.iter_mut()) {
        if !applies(f, &obj.name, obj.inputs.iter().map(|i| i.name.as_str())) {
            continue;
        }
        // Scoped to this objective but naming none of its inputs: reported as unused later.
        let Some(k) = obj.inputs.iter().position(|i| i.name == f.name) else {
            continue;
        };
        *used = true;
        let x: f64 = f
            .value
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| {
                Error::User(format!(
                    "poc: `--at {}`: `{}` is not a finite number\n",
                    f.raw, f.value
                ))
            })?;
        value[k] = Some(x);
    }
    for (k, input) in obj.inputs.iter().enumerate() {
        if value[k].is_some() {
            continue;
        }
        value[k] = match &input.source {
            Source::PolicyLogps(side) => Some(
                obj.inputs
                    .iter()
                    .zip(&value)
                    .find(|(i, _)| i.source == Source::ReferenceLogps(*side))
                    .and_then(|(_, v)| *v)
                    .unwrap_or(HELD_LOGPS),
            ),
            s => held_default(s),
        };
    }
    let mut columns = Vec::with_capacity(obj.inputs.len());
    let mut held = Vec::new();
    for (input, v) in obj.inputs.iter().zip(&value) {
        let Some(v) = *v else {
            return Err(Error::User(format!(
                "poc: {}: input `{}` ({}) has no default value for plotting\n  = hint: give it with --at {}=VALUE\n",
                obj.name,
                input.name,
                input.source.text(),
                input.name
            )));
        };
        columns.push(match swept_side(&input.source) {
            Some(Side::Chosen) => deltas.iter().map(|d| v + d / 2.0).collect(),
            Some(Side::Rejected) => deltas.iter().map(|d| v - d / 2.0).collect(),
            None => {
                held.push(format!("{}={v}", input.name));
                vec![v; deltas.len()]
            }
        });
    }

    // A batch-level objective (AOT's sort) would mix the grid's points as one batch: each Δ is
    // its own batch of one pair instead.
    let out = if c.program.is_batch_level() {
        let mut out = vec![Vec::with_capacity(deltas.len()); c.program.outputs.len()];
        for r in 0..deltas.len() {
            let row: Vec<Vec<f64>> = columns.iter().map(|col| vec![col[r]]).collect();
            let one = poc_compiler::interp::eval_batch(&c.program, &params, &row);
            for (o, v) in out.iter_mut().zip(one) {
                o.push(v[0]);
            }
        }
        out
    } else {
        poc_compiler::interp::eval_batch(&c.program, &params, &columns)
    };
    let mut loss = vec![f64::NAN; deltas.len()];
    let mut slope = vec![0.0; deltas.len()];
    for (o, values) in c.program.outputs.iter().zip(&out) {
        match o.kind {
            OutputKind::Loss => loss.clone_from(values),
            OutputKind::Grad(i) => {
                // Chain rule: x = x0 ± Δ/2, so dL/dΔ gains ±½·∂L/∂x.
                let sign = match obj.inputs.get(i as usize).map(|x| swept_side(&x.source)) {
                    Some(Some(Side::Chosen)) => 0.5,
                    Some(Some(Side::Rejected)) => -0.5,
                    _ => 0.0,
                };
                for (s, g) in slope.iter_mut().zip(values) {
                    *s += sign * g;
                }
            }
            OutputKind::Metric(_) => {}
        }
    }
    let label = if obj.params.is_empty() {
        obj.name.clone()
    } else {
        let ps: Vec<String> = obj
            .params
            .iter()
            .zip(&params)
            .map(|(p, v)| format!("{}={v}", p.name))
            .collect();
        format!("{} ({})", obj.name, ps.join(", "))
    };
    Ok(Curve {
        name: obj.name.clone(),
        label,
        loss,
        slope,
        held,
    })
}

struct ObjectiveFigure<'a> {
    deltas: &'a [f64],
    curves: &'a [Curve],
    loss_axis: Option<(f64, f64)>,
    grad_axis: Option<(f64, f64)>,
    /// Curves are divided by their magnitude at Δ = 0 (`--normalize`).
    normalized: bool,
    footnote: String,
}

impl ObjectiveFigure<'_> {
    fn draw(&self, root: &Area) -> Result<()> {
        let body = root
            .titled(
                "loss L(Δ) and dL/dΔ against the implicit reward margin Δ",
                (FONT, 22),
            )
            .map_err(draw_error)?;
        let (width, height) = body.dim_in_pixel();
        let (panels, foot) = body.split_vertically(height.saturating_sub(26));
        // About 6.5 pixels per character at size 13; cut rather than run off the image.
        let fits = (width as usize).saturating_sub(20) * 2 / 13;
        let footnote = if self.footnote.chars().count() > fits {
            let cut: String = self.footnote.chars().take(fits.saturating_sub(1)).collect();
            format!("{cut}…")
        } else {
            self.footnote.clone()
        };
        foot.draw(&Text::new(
            footnote,
            (10, 6),
            (FONT, 13).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(draw_error)?;
        let halves = panels.split_evenly((2, 1));
        let x = (self.deltas[0], self.deltas[self.deltas.len() - 1]);
        let loss: Vec<Series> = self
            .curves
            .iter()
            .map(|c| Series {
                label: c.label.clone(),
                xs: self.deltas,
                ys: &c.loss,
            })
            .collect();
        let slope: Vec<Series> = self
            .curves
            .iter()
            .map(|c| Series {
                label: c.label.clone(),
                xs: self.deltas,
                ys: &c.slope,
            })
            .collect();
        let (loss_caption, slope_caption, loss_y, slope_y) = if self.normalized {
            (
                "loss ÷ |L(0)|",
                "derivative dL/dΔ = ½·∂L/∂chosen − ½·∂L/∂rejected (symbolic) ÷ |dL/dΔ(0)|",
                "L / |L(0)|",
                "dL/dΔ / |dL/dΔ(0)|",
            )
        } else {
            (
                "loss",
                "derivative dL/dΔ = ½·∂L/∂chosen − ½·∂L/∂rejected (symbolic)",
                "L",
                "dL/dΔ",
            )
        };
        panel(
            &halves[0],
            loss_caption,
            "Δ",
            loss_y,
            x,
            self.loss_axis,
            &loss,
            true,
        )?;
        panel(
            &halves[1],
            slope_caption,
            "Δ",
            slope_y,
            x,
            self.grad_axis,
            &slope,
            false,
        )
    }
}
