//! The benchmark's report: the Markdown table and the frontier plot.

use super::evaluate::Metrics;
use super::stats::mean_ci;
use super::{AlignOptions, Budget, Entrant, Kind, MPO_DPO_STAGE, mpo_steps};
use crate::Result;
use crate::plot::draw::{COLORS, FONT, draw_error, render};
use plotters::prelude::*;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// The last `eval/accuracy` in a run's metrics.jsonl.
pub(super) fn reward_model_accuracy(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines().rev().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()?
            .get("metrics")?
            .get("eval/accuracy")?
            .as_f64()
    })
}

/// `mean ± half-width` (or the mean alone, or `—`).
fn cell(xs: &[f64], digits: usize) -> String {
    match mean_ci(xs) {
        None => "—".into(),
        Some((m, None)) => format!("{m:.digits$}"),
        Some((m, Some(h))) => format!("{m:.digits$} ± {h:.digits$}"),
    }
}

/// The Markdown table of the results, with its notes.
pub(super) fn table(
    entrants: &[Entrant],
    results: &[Vec<Metrics>],
    reference_rewards: &[f64],
    budget: &Budget,
    args: &AlignOptions,
    reward_note: Option<String>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| objective | β | true reward r* | win rate vs ref | KL(π‖π_ref) | reward acc. (held-out) | ECE | train s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| reference (SFT) | | {} | 0.5 | 0 | | | |",
        cell(reference_rewards, 3)
    );
    for (e, r) in entrants.iter().zip(results) {
        let col = |f: fn(&Metrics) -> f64| r.iter().map(f).collect::<Vec<f64>>();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            e.name,
            e.beta,
            cell(&col(|m| m.true_reward), 3),
            cell(&col(|m| m.win_rate), 3),
            cell(&col(|m| m.kl), 2),
            cell(&col(|m| m.accuracy), 3),
            cell(&col(|m| m.ece), 3),
            cell(&col(|m| m.train_seconds), 0),
        );
    }
    let _ = writeln!(
        s,
        "\nMean ± 95% CI half-width over {} seed(s) (t-distribution); world seed {}, reference {} SFT steps, {} preference steps of {} pairs at lr {}, {} prompts × 1 sample at temperature 1 (≤ {} new tokens). Win rate by r* with ties 1/2; KL sampled; accuracy and ECE (10 bins, p = σ(β·Δ)) on held-out pairs untied in r*. See docs/ALIGN.md.",
        budget.seeds,
        args.world_seed,
        budget.sft_steps,
        budget.steps,
        args.batch_size,
        args.lr,
        budget.eval_prompts,
        budget.max_new_tokens
    );
    if entrants.iter().any(|e| e.kind != Kind::Pairs) {
        let (d, p) = mpo_steps(budget.steps);
        let _ = writeln!(
            s,
            "\nEqual budget: {} batches of {} examples per entrant — pairs for a pairwise objective, prompts for an on-policy one ({} rollout batches, 4 PPO epochs each), and for mpo {d} DPO steps on its easy pairs then {p} PPO rollout batches on its hard prompts ({MPO_DPO_STAGE}: mpo's model after its DPO stage, not a separate run). On-policy entrants and mpo score with one reward model (bt_reward, {} steps from the reference{}), whose training is not in their train time.",
            budget.steps,
            args.batch_size,
            budget.steps,
            budget.reward_steps,
            reward_note.unwrap_or_default()
        );
    }
    s
}

/// A labelled, coloured set of (KL, true reward) points of the frontier plot.
type Points = (String, RGBColor, Vec<(f64, f64)>);

/// OUT/frontier.png: mean true reward against KL, every seed as a small point, the mean with
/// 95% CI bars in both directions, the reference at KL 0.
pub(super) fn frontier(
    out: &Path,
    entrants: &[Entrant],
    results: &[Vec<Metrics>],
    reference_rewards: &[f64],
) -> Result<()> {
    // The axes hold every seed's point and every mean's interval.
    let with_intervals = |per_objective: Vec<Vec<f64>>| -> Vec<f64> {
        let mut all: Vec<f64> = per_objective.iter().flatten().copied().collect();
        for v in &per_objective {
            if let Some((m, Some(h))) = mean_ci(v) {
                all.extend([m - h, m + h]);
            }
        }
        all.into_iter().filter(|v| v.is_finite()).collect()
    };
    let column = |f: fn(&Metrics) -> f64| -> Vec<Vec<f64>> {
        results.iter().map(|r| r.iter().map(f).collect()).collect()
    };
    let mut xs = with_intervals(column(|m| m.kl));
    xs.push(0.0);
    let mut ys = column(|m| m.true_reward);
    ys.push(reference_rewards.to_vec());
    let ys = with_intervals(ys);
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !(lo.is_finite() && hi.is_finite()) {
            return (-1.0, 1.0);
        }
        let pad = ((hi - lo) * 0.1).max(0.05);
        (lo - pad, hi + pad)
    };
    let (x0, x1) = range(&xs);
    let (y0, y1) = range(&ys);
    render(out, (960, 640), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "true reward r* against KL(π‖π_ref) (mean ± 95% CI; small dots: seeds)",
                (FONT, 20),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("KL(π‖π_ref), nats per completion (sampled)")
            .y_desc("mean r*")
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_error)?;
        let mut series: Vec<Points> = vec![(
            "reference (SFT)".into(),
            RGBColor(0, 0, 0),
            reference_rewards.iter().map(|&r| (0.0, r)).collect(),
        )];
        for (k, (e, r)) in entrants.iter().zip(results).enumerate() {
            series.push((
                e.name.clone(),
                COLORS[k % COLORS.len()],
                r.iter().map(|m| (m.kl, m.true_reward)).collect(),
            ));
        }
        for (name, color, points) in &series {
            let points: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let color = *color;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.mix(0.5).filled())),
                )
                .map_err(draw_error)?;
            let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
            let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
            let (Some((mx, hx)), Some((my, hy))) = (mean_ci(&xs), mean_ci(&ys)) else {
                continue;
            };
            let (hx, hy) = (hx.unwrap_or(0.0), hy.unwrap_or(0.0));
            chart
                .draw_series([
                    PathElement::new(vec![(mx - hx, my), (mx + hx, my)], color.stroke_width(2)),
                    PathElement::new(vec![(mx, my - hy), (mx, my + hy)], color.stroke_width(2)),
                ])
                .map_err(draw_error)?;
            chart
                .draw_series(std::iter::once(Circle::new((mx, my), 6, color.filled())))
                .map_err(draw_error)?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .draw()
            .map_err(draw_error)?;
        Ok(())
    })
}
