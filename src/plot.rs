//! `poc plot`: PNG figures, drawn at the CLI's edge (the compiler crate stays pure).
//!
//! Two kinds of figure:
//! - **objectives**: the loss and its derivative dL/dΔ against the implicit reward margin Δ,
//!   several objectives overlaid. The values come from the compiled program run on the f64
//!   interpreter, the derivative from the compiler's own symbolic gradient (chain rule, no
//!   finite differences).
//! - **runs**: a training run's `metrics.jsonl` (loss, gradient norm, learning rate and every
//!   metric) against the step, as small multiples.
//!
//! Δ is defined by input *sources*, never by objective name: every differentiable input (policy
//! log-probs, rewards) moves by +Δ/2 on the chosen side and by −Δ/2 on the rejected side from
//! its value at Δ = 0. Held at a reference that equals the policy at Δ = 0, the chosen log-ratio
//! is +Δ/2 and the rejected one −Δ/2, so Δ is the log-ratio margin, and
//! dL/dΔ = ½·Σ_chosen ∂L/∂x − ½·Σ_rejected ∂L/∂x.

use crate::{Failure, cli};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use poc_compiler::{Compiled, OutputKind, Side, Source};
use serde_json::Value;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// The long help of `poc plot`.
pub const ABOUT: &str = "\
Draw objectives' loss and gradient against the reward margin Δ, or a training run's curves (PNG).

OBJECTIVE mode (each TARGET a .po file or a shipped objective name): one figure with two
panels, the loss L(Δ) and its derivative dL/dΔ, every objective overlaid with a legend. This
is the picture that tells DPO (a gradient that fades smoothly), IPO (linear: it pushes back
past its target margin), hinge (exactly zero past 1/β) and DiscoPOP (non-monotone) apart.

How Δ is defined, for any objective: every differentiable input moves with Δ by its side,
  policy_chosen_logps   = (its value at Δ = 0) + Δ/2     reward_chosen   = 0 + Δ/2
  policy_rejected_logps = (its value at Δ = 0) − Δ/2     reward_rejected = 0 − Δ/2
and at Δ = 0 the policy equals the reference, so the chosen log-ratio is +Δ/2, the rejected
one −Δ/2, and Δ is the implicit reward margin (before β). The derivative is the chain rule
on the compiler's symbolic gradient: dL/dΔ = ½·∂L/∂(chosen) − ½·∂L/∂(rejected).
Every other input is held at: ref_*_logps −50, chosen_len = rejected_len = 1 (so per-token
averages equal sums: Δ is also the per-token margin), ref_*_entropy 2 nats, vocab_size
128256, score_chosen 1, score_rejected 0. Change any input with --at NAME=VALUE (for a
policy or reward input it sets the value at Δ = 0); other dataset columns need --at.

RUN mode (each TARGET a run directory of `poc run`): loss, grad_norm, lr and every metric of
RUN_DIR/metrics.jsonl against the step, one panel each; several runs are overlaid.";

/// Examples printed after `poc plot --help`.
pub const EXAMPLES: &str = "Examples:
  poc plot dpo ipo hinge discopop --normalize --out cmp.png   shapes, each ÷ its value at Δ = 0
  poc plot dpo hinge discopop --out cmp.png          the values (β = 0.1 each)
  poc plot dpo ipo --set ipo.beta=0.5 --range -10:10
  poc plot my_loss.po --csv curve.csv                the sampled (Δ, L, dL/dΔ) table too
  poc plot mipo --at chosen_len=100 --at rejected_len=100 --range -200:200
  poc plot runs/dpo                                  writes runs/dpo/curves.png
  poc plot runs/dpo runs/ipo --out runs.png          two runs, overlaid";

/// Arguments of `poc plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Objectives (.po files or shipped names) or run directories; not both in one call.
    #[arg(required = true, value_name = "OBJECTIVE|RUN_DIR")]
    targets: Vec<String>,
    /// The PNG to write (default: plot.png for objectives, RUN_DIR/curves.png for one run).
    #[arg(long, value_name = "FILE.png")]
    out: Option<PathBuf>,
    /// Objectives: override a parameter in every plotted objective that has it, or in one
    /// (`--set ipo.beta=0.5`). Repeatable.
    #[arg(long = "set", value_name = "[OBJECTIVE.]NAME=VALUE")]
    sets: Vec<String>,
    /// Objectives: hold an input at a value (for a policy or reward input: its value at Δ = 0),
    /// in every objective that declares it, or in one (`--at mipo.chosen_len=50`). Repeatable.
    #[arg(long = "at", value_name = "[OBJECTIVE.]INPUT=VALUE")]
    at: Vec<String>,
    /// Objectives: the interval of Δ.
    #[arg(
        long,
        value_name = "LO:HI",
        default_value = "-20:20",
        allow_hyphen_values = true
    )]
    range: String,
    /// Objectives: number of evenly spaced Δ samples (odd counts on a symmetric range
    /// include Δ = 0).
    #[arg(long, default_value_t = 401)]
    points: usize,
    /// Objectives: also write the sampled table as CSV (objective,delta,loss,dloss_ddelta).
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
    /// Objectives: fix the loss panel's vertical axis (curves are clipped to it).
    #[arg(long, value_name = "LO:HI", allow_hyphen_values = true)]
    loss_axis: Option<String>,
    /// Objectives: fix the dL/dΔ panel's vertical axis (curves are clipped to it).
    #[arg(long, value_name = "LO:HI", allow_hyphen_values = true)]
    grad_axis: Option<String>,
    /// Objectives: draw each curve divided by its magnitude at Δ = 0 (the sample nearest it),
    /// to compare shapes across scales (IPO's gradient is ~100x DPO's). The CSV stays raw.
    #[arg(long)]
    normalize: bool,
    /// Image size in pixels (default 1000x800 for objectives; for runs 1200 wide and 320
    /// per row of three panels).
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
}

/// The `poc plot` command.
pub fn run(args: PlotArgs) -> Result<(), Failure> {
    let dirs = args
        .targets
        .iter()
        .filter(|t| Path::new(t.as_str()).is_dir())
        .count();
    if dirs == 0 {
        plot_objectives(&args)
    } else if dirs == args.targets.len() {
        plot_runs(&args)
    } else {
        Err(Failure::User(
            "poc plot: give either objectives or run directories, not both\n".into(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Objectives: L(Δ) and dL/dΔ.

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

fn parse_scoped<'a>(flag: &'static str, raw: &'a str) -> Result<Scoped<'a>, Failure> {
    let Some((lhs, value)) = raw.split_once('=') else {
        return Err(Failure::User(format!(
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
) -> Result<(), Failure> {
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
        Err(Failure::User(msg))
    }
}

fn parse_range(flag: &str, text: &str) -> Result<(f64, f64), Failure> {
    let bad = || {
        Failure::User(format!(
            "poc: `{flag} {text}`: expected LO:HI with finite numbers LO < HI (e.g. -20:20)\n"
        ))
    };
    let (lo, hi) = text.split_once(':').ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    if lo.is_finite() && hi.is_finite() && lo < hi {
        Ok((lo, hi))
    } else {
        Err(bad())
    }
}

fn parse_size(text: Option<&str>, default: (u32, u32)) -> Result<(u32, u32), Failure> {
    let Some(text) = text else {
        return Ok(default);
    };
    let bad = || {
        Failure::User(format!(
            "poc: `--size {text}`: expected WIDTHxHEIGHT in pixels, each 200 to 8000 (e.g. 1000x800)\n"
        ))
    };
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if (200..=8000).contains(&w) && (200..=8000).contains(&h) {
        Ok((w, h))
    } else {
        Err(bad())
    }
}

fn plot_objectives(args: &PlotArgs) -> Result<(), Failure> {
    let (lo, hi) = parse_range("--range", &args.range)?;
    if args.points < 2 {
        return Err(Failure::User(format!(
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

    let mut compiled = Vec::new();
    for t in &args.targets {
        let (label, src) = load_objective(t)?;
        compiled.push(cli::compile(&label, &src)?);
    }
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
    for c in &compiled {
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
            return Err(Failure::User(format!(
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
            .map_err(|e| Failure::User(format!("poc: cannot write `{}`: {e}\n", csv.display())))?;
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
    println!("wrote {}", out.display());
    Ok(())
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
) -> Result<Curve, Failure> {
    let obj = &c.objective;
    // Δ exists only between a chosen and a rejected completion: every differentiable input must
    // belong to one of them (on-policy rollout observables, for one, do not).
    if let Some(i) = obj
        .inputs
        .iter()
        .find(|i| i.differentiable && swept_side(&i.source).is_none())
    {
        return Err(Failure::User(format!(
            "poc: {}: input `{}` ({}) belongs to neither a chosen nor a rejected completion; `poc plot` draws pairwise objectives, whose loss has a reward margin Δ\n",
            obj.name,
            i.name,
            i.source.text()
        )));
    }
    if !obj.inputs.iter().any(|i| swept_side(&i.source).is_some()) {
        return Err(Failure::User(format!(
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
        .map_err(|d| Failure::User(poc_grammar::diag::render_all(&d, "poc", "")))?;

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
                Failure::User(format!(
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
            return Err(Failure::User(format!(
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

    let out = poc_compiler::interp::eval_batch(&c.program, &params, &columns);
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

/// A `.po` file or a shipped objective; a clear message for anything else.
fn load_objective(target: &str) -> Result<(String, String), Failure> {
    if Path::new(target).exists() || crate::library::shipped(target).is_some() {
        return cli::load(target);
    }
    let names = crate::library::SHIPPED.iter().map(|(n, _)| *n);
    let hint = match poc_grammar::diag::suggest(target, names) {
        Some(s) => format!("did you mean `{s}` (a shipped objective)?"),
        None => "give a .po file, a shipped objective name (see `poc list`) or a run directory of `poc run`".into(),
    };
    Err(Failure::User(format!(
        "poc: no such file, shipped objective or run directory: `{target}`\n  = hint: {hint}\n"
    )))
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
    fn draw(&self, root: &Area) -> Result<(), Failure> {
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

// ---------------------------------------------------------------------------------------------
// Runs: metrics.jsonl against the step.

/// One run's logged series, in first-seen order (loss, grad_norm, lr, then the metrics).
struct RunLog {
    name: String,
    steps: Vec<f64>,
    series: Vec<(String, Vec<f64>)>,
}

fn plot_runs(args: &PlotArgs) -> Result<(), Failure> {
    if !args.sets.is_empty()
        || !args.at.is_empty()
        || args.csv.is_some()
        || args.loss_axis.is_some()
        || args.grad_axis.is_some()
        || args.normalize
        || args.range != "-20:20"
        || args.points != 401
    {
        return Err(Failure::User(
            "poc plot: --set, --at, --range, --points, --csv, --normalize, --loss-axis and --grad-axis apply to objectives, not to run directories\n".into(),
        ));
    }
    let runs = args
        .targets
        .iter()
        .map(|d| read_run(Path::new(d)))
        .collect::<Result<Vec<_>, _>>()?;
    let out = match (&args.out, runs.len()) {
        (Some(o), _) => o.clone(),
        (None, 1) => Path::new(&args.targets[0]).join("curves.png"),
        (None, _) => {
            return Err(Failure::User(
                "poc plot: several runs need --out FILE.png (one run defaults to RUN_DIR/curves.png)\n".into(),
            ));
        }
    };
    // Panels: every series name of every run, in first-seen order.
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        for (n, _) in &r.series {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let cols = names.len().clamp(1, 3);
    let rows = names.len().div_ceil(cols);
    let size = parse_size(args.size.as_deref(), (1200, 40 + 320 * rows as u32))?;
    let title = if runs.len() == 1 {
        format!("{}: metrics.jsonl", runs[0].name)
    } else {
        format!("{} runs", runs.len())
    };
    render(&out, size, |root| {
        let body = root.titled(&title, (FONT, 22)).map_err(draw_error)?;
        let areas = body.split_evenly((rows, cols));
        for (area, name) in areas.iter().zip(&names) {
            let series: Vec<Series> = runs
                .iter()
                .filter_map(|r| {
                    r.series
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, ys)| Series {
                            label: r.name.clone(),
                            xs: &r.steps,
                            ys,
                        })
                })
                .collect();
            let (x0, x1) = padded(finite_range(
                runs.iter().flat_map(|r| r.steps.iter().copied()),
            ));
            panel(
                area,
                name,
                "step",
                "",
                (x0, x1),
                None,
                &series,
                runs.len() > 1,
            )?;
        }
        Ok(())
    })?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The smallest and largest finite value, if any.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

/// Reads RUN_DIR/metrics.jsonl; every problem names the file and line.
fn read_run(dir: &Path) -> Result<RunLog, Failure> {
    let path = dir.join("metrics.jsonl");
    let label = path.display();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::User(format!(
            "poc: cannot read `{label}`: {e}\n  = hint: `poc run ... --out {}` writes it; is this a run directory?\n",
            dir.display()
        ))
    })?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut log = RunLog {
        name,
        steps: Vec::new(),
        series: Vec::new(),
    };
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let obj = match crate::jsonl::object(line, &label, lineno) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let Some(step) = obj.get("step").and_then(Value::as_f64) else {
            errors.push(format!("{label}:{lineno}: missing numeric `step`"));
            continue;
        };
        // (name, value) of this line; null (a non-finite value in serde_json) is a gap.
        let mut row: Vec<(String, f64)> = Vec::new();
        for key in ["loss", "grad_norm", "lr"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_f64() {
                    Some(x) => row.push((key.to_string(), x)),
                    None => errors.push(format!(
                        "{label}:{lineno}: `{key}` must be a number, found {v}"
                    )),
                },
            }
        }
        match obj.get("metrics") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (key, v) in m {
                    match v {
                        Value::Null => {}
                        Value::Bool(b) => row.push((key.clone(), f64::from(u8::from(*b)))),
                        v => match v.as_f64() {
                            Some(x) => row.push((key.clone(), x)),
                            None => errors.push(format!(
                                "{label}:{lineno}: metric `{key}` must be a number, found {v}"
                            )),
                        },
                    }
                }
            }
            Some(v) => errors.push(format!(
                "{label}:{lineno}: `metrics` must be an object, found {v}"
            )),
        }
        let k = log.steps.len();
        log.steps.push(step);
        for (key, x) in row {
            let column = match log.series.iter().position(|(n, _)| *n == key) {
                Some(p) => &mut log.series[p].1,
                None => {
                    log.series.push((key, Vec::new()));
                    let last = log.series.len() - 1;
                    &mut log.series[last].1
                }
            };
            column.resize(k, f64::NAN);
            column.push(x);
        }
    }
    if !errors.is_empty() {
        let shown = errors.len().min(20);
        let mut msg = errors[..shown].join("\n");
        if errors.len() > shown {
            msg.push_str(&format!("\n... and {} more", errors.len() - shown));
        }
        msg.push('\n');
        return Err(Failure::User(msg));
    }
    if log.steps.is_empty() {
        return Err(Failure::User(format!(
            "poc: `{label}` has no logged steps\n"
        )));
    }
    let n = log.steps.len();
    for (_, column) in &mut log.series {
        column.resize(n, f64::NAN);
    }
    Ok(log)
}

// ---------------------------------------------------------------------------------------------
// Drawing.

/// The one font family, registered from the embedded file (no system fonts are consulted).
pub(crate) const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

pub(crate) fn draw_error(e: impl std::fmt::Display) -> Failure {
    Failure::Internal(format!("drawing the plot: {e}"))
}

fn register_font() -> Result<(), Failure> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Failure::Internal("the embedded font does not load".into()))
    }
}

/// Draws into an RGB buffer with `draw` and writes it to `out` as PNG.
pub(crate) fn render(
    out: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area) -> Result<(), Failure>,
) -> Result<(), Failure> {
    register_font()?;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let backend = BitMapBackend::with_buffer(&mut rgb, (w, h));
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        draw(&root)?;
        root.present().map_err(draw_error)?;
    }
    let cannot = |e: &dyn std::fmt::Display| {
        Failure::User(format!("poc: cannot write `{}`: {e}\n", out.display()))
    };
    let file = std::fs::File::create(out).map_err(|e| cannot(&e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| cannot(&e))?;
    writer.write_image_data(&rgb).map_err(|e| cannot(&e))?;
    writer.finish().map_err(|e| cannot(&e))
}

/// One line of a panel.
struct Series<'a> {
    label: String,
    xs: &'a [f64],
    ys: &'a [f64],
}

/// Distinguishable line colours (Tableau 10).
pub(crate) const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A [lo, hi] interval with 5% margins, never empty.
fn padded(range: Option<(f64, f64)>) -> (f64, f64) {
    match range {
        None => (-1.0, 1.0),
        Some((lo, hi)) if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()).max(1e-300) => {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - d, hi + d)
        }
        Some((lo, hi)) => {
            let d = (hi - lo) * 0.05;
            (lo - d, hi + d)
        }
    }
}

/// One chart: every series as a line, clipped to the vertical axis, broken at non-finite values.
#[allow(clippy::too_many_arguments)]
fn panel(
    area: &Area,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    x: (f64, f64),
    y_axis: Option<(f64, f64)>,
    series: &[Series],
    legend: bool,
) -> Result<(), Failure> {
    let y = y_axis.unwrap_or_else(|| {
        padded(finite_range(
            series.iter().flat_map(|s| s.ys.iter().copied()),
        ))
    });
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(draw_error)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235));
    if !y_desc.is_empty() {
        mesh.y_desc(y_desc);
    }
    mesh.draw().map_err(draw_error)?;
    if y.0 < 0.0 && y.1 > 0.0 {
        chart
            .draw_series(LineSeries::new(
                [(x.0, 0.0), (x.1, 0.0)],
                RGBColor(160, 160, 160),
            ))
            .map_err(draw_error)?;
    }
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let style = color.stroke_width(2);
        let mut first = true;
        for line in clipped_lines(s.xs, s.ys, y) {
            let drawn = chart
                .draw_series(LineSeries::new(line, style))
                .map_err(draw_error)?;
            if first {
                drawn.label(s.label.clone()).legend(move |(px, py)| {
                    PathElement::new(vec![(px, py), (px + 24, py)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Splits a sampled curve into polylines inside `lo ≤ y ≤ hi`: broken where a value is not
/// finite, cut where the curve leaves the band (so nothing is drawn outside the axes).
fn clipped_lines(xs: &[f64], ys: &[f64], (lo, hi): (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let points: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let segment = if a.1.is_finite() && b.1.is_finite() {
            clip_segment(a, b, lo, hi)
        } else {
            None
        };
        match segment {
            Some((p, q)) if current.last() == Some(&p) => current.push(q),
            Some((p, q)) => {
                if current.len() > 1 {
                    lines.push(std::mem::take(&mut current));
                }
                current = vec![p, q];
            }
            None => {
                if current.len() > 1 {
                    lines.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if current.len() > 1 {
        lines.push(current);
    }
    // A single finite sample inside the band still shows, as a dot-sized line.
    if lines.is_empty()
        && let [(x, y)] = points
            .iter()
            .filter(|p| p.1.is_finite() && p.1 >= lo && p.1 <= hi)
            .copied()
            .collect::<Vec<_>>()[..]
    {
        lines.push(vec![(x, y), (x, y)]);
    }
    lines
}

/// The part of segment a→b with lo ≤ y ≤ hi (Liang–Barsky in y; x is always inside).
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    lo: f64,
    hi: f64,
) -> Option<((f64, f64), (f64, f64))> {
    let dy = b.1 - a.1;
    let (t0, t1) = if dy == 0.0 {
        if a.1 < lo || a.1 > hi {
            return None;
        }
        (0.0, 1.0)
    } else {
        let (ta, tb) = ((lo - a.1) / dy, (hi - a.1) / dy);
        (ta.min(tb).max(0.0), ta.max(tb).min(1.0))
    };
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * (b.0 - a.0), a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_cuts_at_the_band_and_breaks_at_nan() {
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0];
        let ys = [0.0, 2.0, f64::NAN, 0.5, 0.5];
        let lines = clipped_lines(&xs, &ys, (0.0, 1.0));
        assert_eq!(
            lines,
            vec![vec![(0.0, 0.0), (0.5, 1.0)], vec![(3.0, 0.5), (4.0, 0.5)]]
        );
    }

    #[test]
    fn ranges_parse_and_reject_nonsense() {
        assert_eq!(parse_range("--range", "-20:20").ok(), Some((-20.0, 20.0)));
        assert!(parse_range("--range", "3:1").is_err());
        assert!(parse_range("--range", "nan:1").is_err());
        assert!(parse_range("--range", "1").is_err());
    }
}
