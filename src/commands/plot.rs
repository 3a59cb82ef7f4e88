//! `poc plot`: objectives' loss and gradient against Δ, or runs' curves (poc_pipelines::plot).

use crate::edge::{Failure, load_compiled};
use clap::Args;
use poc_pipelines::library;
use poc_pipelines::plot::{self, PlotOptions};
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

impl PlotArgs {
    /// The targets and the drawing options.
    pub fn into_parts(self) -> (Vec<String>, PlotOptions) {
        let options = PlotOptions {
            out: self.out,
            sets: self.sets,
            at: self.at,
            range: self.range,
            points: self.points,
            csv: self.csv,
            loss_axis: self.loss_axis,
            grad_axis: self.grad_axis,
            normalize: self.normalize,
            size: self.size,
        };
        (self.targets, options)
    }
}

/// Runs `poc plot`.
pub fn run(args: PlotArgs) -> Result<(), Failure> {
    let (targets, options) = args.into_parts();
    let dirs: Vec<PathBuf> = targets
        .iter()
        .map(PathBuf::from)
        .filter(|t| t.is_dir())
        .collect();
    let out = if dirs.is_empty() {
        let compiled = targets
            .iter()
            .map(|t| load_objective(t))
            .collect::<Result<Vec<_>, _>>()?;
        plot::objectives::plot(&compiled, &options)?
    } else if dirs.len() == targets.len() {
        plot::runs::plot(&dirs, &options)?
    } else {
        return Err(Failure::User(
            "poc plot: give either objectives or run directories, not both\n".into(),
        ));
    };
    println!("wrote {}", out.display());
    Ok(())
}

/// A `.po` file or a shipped objective; a clear message for anything else.
fn load_objective(target: &str) -> Result<poc_compiler::Compiled, Failure> {
    if Path::new(target).exists() || library::shipped(target).is_some() {
        return load_compiled(target);
    }
    let names = library::SHIPPED.iter().map(|(n, _)| *n);
    let hint = match poc_grammar::diag::suggest(target, names) {
        Some(s) => format!("did you mean `{s}` (a shipped objective)?"),
        None => "give a .po file, a shipped objective name (see `poc list`) or a run directory of `poc run`".into(),
    };
    Err(Failure::User(format!(
        "poc: no such file, shipped objective or run directory: `{target}`\n  = hint: {hint}\n"
    )))
}
