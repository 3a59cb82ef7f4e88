//! The benchmark's report: the gates, the frontier tables overall and per stratum, the
//! operating points, each seed paper's claim with its control, and the plots.

use super::analysis::{Analysis, BEST_OF_N, Cut, Gate, Point, REFERENCE, Stored};
use super::frontier::{Stratum, Verdict, compare, envelope_steps};
use super::stats::{mean, mean_ci};
use super::{Budget, COMMAND};
use crate::Result;
use crate::plot::draw::{FONT, distinct_color, draw_error, render, text_width};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// The KL budgets (nats) of the tables.
pub const BUDGETS: [f64; 3] = [1.0, 3.0, 10.0];
/// The KL budget of the per-stratum tables, the operating points and the claims.
pub const CLAIM_BUDGET: f64 = 3.0;
/// DPO's validity gate: at its middle β, at KL ≤ [`GATE_KL`], r* must gain this much.
pub const DPO_GATE_GAIN: f64 = 0.2;
/// The KL budget of DPO's validity gate.
pub const GATE_KL: f64 = 5.0;
/// DPO's middle β, the one its validity gate reads.
pub const DPO_GATE_SETTING: &str = "β=0.1";

/// `mean ± half-width` of the finite values (or the mean alone, or `—`).
fn cell(xs: &[f64], digits: usize) -> String {
    match mean_ci(xs) {
        None => "—".into(),
        Some((m, None)) => format!("{m:.digits$}"),
        Some((m, Some(h))) => format!("{m:.digits$} ± {h:.digits$}"),
    }
}

/// The message of a reference that fails its gate.
pub(super) fn gate_failure(gate: &Gate, budget: &Budget) -> String {
    format!(
        "the SFT reference did not pass its gate after {} steps: on some family its samples score below {:.0}% of the SFT data's r*, or {:.0}% or more of them leave the alphabet. No objective is trained on it (a comparison from an unconverged reference says nothing; docs/ALIGN.md).\n\n{}\n  = hint: train longer with --sft-steps (the reference is cached per world seed; a longer run replaces it), or check the world with `poc world`",
        budget.sft_steps,
        100.0 * super::analysis::GATE_SHARE,
        100.0 * super::analysis::GATE_NON_LETTER,
        gate.table()
    )
}

/// The verdict of a claim that predicts `a` to be higher than `b` (or lower, `higher` false).
fn verdict(a: &[f64], b: &[f64], higher: bool) -> (String, &'static str) {
    let (m, h, v) = compare(a, b);
    let measured = if h.is_finite() {
        format!("{m:+.3} ± {h:.3}")
    } else {
        format!("{m:+.3}")
    };
    let word = match (v, higher) {
        (Verdict::Higher, true) | (Verdict::Lower, false) => "holds",
        (Verdict::Higher, false) | (Verdict::Lower, true) => "contradicted",
        (Verdict::Within, _) => "inconclusive (within the interval)",
        (Verdict::Unknown, _) => "inconclusive (too few seeds)",
    };
    (measured, word)
}

/// The verdict of a control that predicts no difference.
fn control(a: &[f64], b: &[f64]) -> (String, &'static str) {
    let (m, h, v) = compare(a, b);
    let measured = if h.is_finite() {
        format!("{m:+.3} ± {h:.3}")
    } else {
        format!("{m:+.3}")
    };
    let word = match v {
        Verdict::Within => "holds (no difference beyond the interval)",
        Verdict::Higher | Verdict::Lower => "contradicted",
        Verdict::Unknown => "inconclusive (too few seeds)",
    };
    (measured, word)
}

/// The validity gates: (passed, lines).
fn validity(a: &Analysis, s: &Stored) -> (bool, Vec<String>) {
    let all = &a.strata[0];
    let mut ok = true;
    let mut lines = Vec::new();
    if a.has("dpo") {
        let gains: Vec<f64> = a
            .seeds
            .iter()
            .map(|&seed| {
                let r0 = a.reference(seed).map_or(f64::NAN, |p| p.cut(all).reward);
                a.of("dpo", seed)
                    .iter()
                    .filter(|p| p.setting == DPO_GATE_SETTING)
                    .map(|p| p.cut(all))
                    .filter(|c| c.kl <= GATE_KL)
                    .map(|c| c.reward - r0)
                    .fold(f64::NAN, f64::max)
            })
            .collect();
        let pass = mean(&gains) >= DPO_GATE_GAIN;
        ok &= pass;
        lines.push(format!(
            "- DPO at {DPO_GATE_SETTING} gains at least {DPO_GATE_GAIN} r* over the reference at KL ≤ {GATE_KL}: best gain {} → **{}**",
            cell(&gains, 3),
            if pass { "pass" } else { "FAIL" }
        ));
    } else {
        lines.push("- DPO's gate: dpo is not among the entrants, so the world and budget are not validated".into());
        ok = false;
    }
    let bon4: Vec<f64> = a
        .seeds
        .iter()
        .map(|&seed| {
            let r0 = a.reference(seed).map_or(f64::NAN, |p| p.cut(all).reward);
            a.of(BEST_OF_N, seed)
                .iter()
                .find(|p| p.setting == "N=4")
                .map_or(f64::NAN, |p| p.cut(all).reward - r0)
        })
        .collect();
    let pass = mean(&bon4) > 0.0;
    ok &= pass;
    lines.push(format!(
        "- Best-of-4 beats the reference: r* gain {} → **{}**",
        cell(&bon4, 3),
        if pass { "pass" } else { "FAIL" }
    ));
    if let Some(g) = s.reward_gate {
        lines.push(format!(
            "- Reward model (PPO and MPO rows only): orders {:.1}% of held-out pairs as r* does (gate {:.0}%); {:.1}% against the held-out labels, whose Bayes ceiling is {:.1}% → **{}**",
            100.0 * g.accuracy,
            100.0 * super::analysis::REWARD_GATE,
            100.0 * g.label_accuracy,
            100.0 * g.label_ceiling,
            if g.passed() { "pass" } else { "FAIL: the reward-model rows are not evidence" }
        ));
    }
    (ok, lines)
}

/// The report (Markdown).
pub(super) fn markdown(a: &Analysis, s: &Stored) -> String {
    let mut out = String::new();
    let b = s.budget;
    let args = s.args;
    let _ = writeln!(
        out,
        "# poc bench align: reward–KL frontiers on the synthetic world\n"
    );
    let _ = writeln!(
        out,
        "World v2, seed {}, {} pairs; reference: SFT of tiny for {} steps of 16 rows; every pairwise entrant: one epoch of {} pairs = {} steps of {} at lr {} with checkpoints at 1/8, 1/4, 1/2, 1; PPO: {} rollout batches of {}; {} seed(s); evaluation: {} held-out prompts × 1 sample at temperature 1 and 1 greedy completion (≤ {} tokens), {} held-out pairs.{}\n",
        args.world_seed,
        args.pairs_from.name(),
        b.sft_steps,
        b.pairs,
        s.steps,
        args.batch_size,
        args.lr,
        b.ppo_steps,
        args.batch_size,
        b.seeds,
        b.eval_prompts,
        b.max_new_tokens,
        b.heldout,
        if args.quick {
            " **--quick: a smoke test; the numbers mean nothing and no gate is enforced.**"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "## The reference and its gate\n\n{}", s.gate.table());
    let (valid, lines) = validity(a, s);
    let _ = writeln!(out, "## Validity gates\n\n{}\n", lines.join("\n"));
    if !valid || !s.gate.passed() {
        let _ = writeln!(
            out,
            "**Invalid world or budget**: a gate above failed, so the tables below are diagnostics, not findings, and no paper's claim is evaluated.\n"
        );
    }
    frontier_table(&mut out, a);
    strata_table(&mut out, a);
    operating_table(&mut out, a);
    if valid && s.gate.passed() {
        claims(&mut out, a, s.reward_gate.is_none_or(|g| g.passed()));
    }
    let _ = writeln!(
        out,
        "\nConventions: KL(π‖π_ref) is the mean over the policy's own samples of log π − log π_ref (sequence log-probs, the stop token included), per stratum over the stratum's prompts; Best-of-N's KL is log N − (N−1)/N. An envelope at a budget K is the best mean r* of any checkpoint of any setting of the entrant whose KL is at most K (the reference counts, at KL 0), per seed; intervals are 95% t-intervals over seeds, of paired differences seed by seed for comparisons. A claim holds only when its difference clears the interval. ECE compares σ(β·Δ) of the implicit reward Δ on held-out pairs with their **true** probability σ(gap/T) (10 bins). See docs/ALIGN.md."
    );
    out
}

fn frontier_table(out: &mut String, a: &Analysis) {
    let all = &a.strata[0];
    let _ = writeln!(
        out,
        "## Frontier: r* within a KL budget (upper envelope)\n\n| entrant | settings | r* at KL ≤ 1 | KL ≤ 3 | KL ≤ 10 | best r* (its KL) | non-letter at best | train s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let refs: Vec<f64> = a
        .seeds
        .iter()
        .filter_map(|&s| a.reference(s).map(|p| p.cut(all).reward))
        .collect();
    let nl: Vec<f64> = a
        .seeds
        .iter()
        .filter_map(|&s| a.reference(s).map(|p| p.cut(all).non_letter))
        .collect();
    let _ = writeln!(
        out,
        "| reference (SFT) | | {c} | {c} | {c} | {c} (0) | {} | |",
        cell(&nl, 3),
        c = cell(&refs, 3)
    );
    for g in &a.groups {
        let env: Vec<String> = BUDGETS
            .iter()
            .map(|&k| cell(&a.envelope(g, all, k), 3))
            .collect();
        let best = a.operating(g, f64::INFINITY);
        let best_r: Vec<f64> = best
            .iter()
            .map(|p| p.map_or(f64::NAN, |p| p.cut(all).reward))
            .collect();
        let best_kl: Vec<f64> = best
            .iter()
            .map(|p| p.map_or(f64::NAN, |p| p.cut(all).kl))
            .collect();
        let best_nl: Vec<f64> = best
            .iter()
            .map(|p| p.map_or(f64::NAN, |p| p.cut(all).non_letter))
            .collect();
        let seconds: Vec<f64> = a
            .points
            .iter()
            .filter(|p| &p.group == g && p.train_seconds.is_finite())
            .map(|p| p.train_seconds)
            .collect();
        let secs = if seconds.is_empty() {
            String::new()
        } else {
            format!(
                "{:.0}",
                seconds.iter().sum::<f64>() / a.seeds.len().max(1) as f64
            )
        };
        let _ = writeln!(
            out,
            "| {g} | {} | {} | {} | {} | {} ({}) | {} | {secs} |",
            a.settings(g).join(", "),
            env[0],
            env[1],
            env[2],
            cell(&best_r, 3),
            cell(&best_kl, 1),
            cell(&best_nl, 3),
        );
    }
    let _ = writeln!(
        out,
        "\ntrain s: wall-clock seconds of all of the entrant's runs of one seed (every setting).\n"
    );
}

fn strata_table(out: &mut String, a: &Analysis) {
    let _ = writeln!(
        out,
        "## Per stratum: envelope gain over the reference at KL ≤ {CLAIM_BUDGET} (KL of the stratum's prompts)\n"
    );
    let names: Vec<&Stratum> = a.strata.iter().collect();
    let _ = writeln!(
        out,
        "| entrant | {} |",
        names
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(names.len()));
    let refs: Vec<String> = names
        .iter()
        .map(|s| {
            let r: Vec<f64> = a
                .seeds
                .iter()
                .filter_map(|&seed| a.reference(seed).map(|p| p.cut(s).reward))
                .collect();
            cell(&r, 2)
        })
        .collect();
    let _ = writeln!(out, "| reference r* | {} |", refs.join(" | "));
    for g in &a.groups {
        let cells: Vec<String> = names
            .iter()
            .map(|s| cell(&a.gain(g, s, CLAIM_BUDGET), 2))
            .collect();
        let _ = writeln!(out, "| {g} | {} |", cells.join(" | "));
    }
    let _ = writeln!(out);
}

fn operating_table(out: &mut String, a: &Analysis) {
    let all = &a.strata[0];
    let _ = writeln!(
        out,
        "## Operating points: each entrant's best checkpoint at KL ≤ {CLAIM_BUDGET}\n\n| entrant | seed 1's point | r* | KL | greedy r* | non-letter | Δ log π chosen | Δ log π rejected | ECE vs truth | near-tie accuracy |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for g in &a.groups {
        let ops = a.operating(g, CLAIM_BUDGET);
        let first = ops
            .first()
            .copied()
            .flatten()
            .map(|p| {
                if p.fraction > 0.0 {
                    format!("{} at {}", p.setting, fraction(p.fraction))
                } else {
                    p.setting.clone()
                }
            })
            .unwrap_or_else(|| "— (every point above the budget)".into());
        let col = |f: fn(&Cut) -> f64| -> Vec<f64> {
            ops.iter()
                .map(|p| p.map_or(f64::NAN, |p| f(&p.cut(all))))
                .collect()
        };
        let _ = writeln!(
            out,
            "| {g} | {first} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&col(|c| c.reward), 3),
            cell(&col(|c| c.kl), 2),
            cell(&col(|c| c.greedy), 3),
            cell(&col(|c| c.non_letter), 3),
            cell(&col(|c| c.d_chosen), 2),
            cell(&col(|c| c.d_rejected), 2),
            cell(&col(|c| c.ece), 3),
            cell(&col(|c| c.tie_accuracy), 3),
        );
    }
    let _ = writeln!(
        out,
        "\nΔ log π: the change of the held-out chosen and rejected completions' log-probs from the reference (both falling is likelihood displacement). Near ties: held-out pairs with 0 < |gap| < 0.5, ordered by the implicit reward against r*.\n"
    );
}

fn fraction(f: f64) -> &'static str {
    match (f * 8.0).round() as i32 {
        1 => "1/8",
        2 => "1/4",
        4 => "1/2",
        8 => "the end",
        _ => "?",
    }
}

/// One claim's row.
struct Claim {
    paper: &'static str,
    claim: String,
    measure: String,
    measured: String,
    verdict: String,
}

/// Entrants whose numbers rest on the learned reward model.
const USES_REWARD_MODEL: [&str; 2] = ["ppo (reward model)", "mpo"];

fn claims(out: &mut String, a: &Analysis, reward_model_passed: bool) {
    let k = CLAIM_BUDGET;
    let stratum = |n: &str| a.stratum(n).cloned();
    let mut rows: Vec<Claim> = Vec::new();
    let all = a.strata[0].clone();
    let dpo = "dpo";
    let mut push = |paper, claim: &str, measure: String, (measured, verdict): (String, &str)| {
        rows.push(Claim {
            paper,
            claim: claim.into(),
            measure,
            measured,
            verdict: verdict.into(),
        })
    };
    let zeros = vec![0.0; a.seeds.len()];
    if a.has(dpo) {
        push(
            "DPO",
            "raises r* over the reference at a moderate KL",
            format!("envelope gain at KL ≤ {k}"),
            verdict(&a.gain(dpo, &all, k), &zeros, true),
        );
        push(
            "DPO",
            "is no better than Best-of-N at equal KL (Best-of-N is near-optimal for the KL-regularised problem)",
            format!("DPO − Best-of-N envelope at KL ≤ {k}"),
            {
                let (m, w) = verdict(
                    &a.envelope(dpo, &all, k),
                    &a.envelope(BEST_OF_N, &all, k),
                    true,
                );
                (
                    m,
                    if w == "holds" {
                        "contradicted"
                    } else if w == "contradicted" {
                        "holds"
                    } else {
                        w
                    },
                )
            },
        );
    }
    let vs_dpo = |g: &str, s: &Stratum| (a.envelope(g, s, k), a.envelope(dpo, s, k));
    if a.has("mipo") && a.has(dpo) {
        if let Some(low) = stratum("low q") {
            let (x, y) = vs_dpo("mipo", &low);
            push(
                "MIPO",
                "refines the difficult: a larger gain where the reference is misaligned",
                format!("envelope on low-q prompts at KL ≤ {k}, MIPO − DPO"),
                verdict(&x, &y, true),
            );
        }
        if let Some(high) = stratum("high q") {
            let x = a.at_operating("mipo", k, &high, |c| c.kl);
            let y = a.at_operating(dpo, k, &high, |c| c.kl);
            push(
                "MIPO",
                "keeps the easy: less KL spent where the reference is aligned",
                format!("KL on high-q prompts at the operating point (KL ≤ {k}), MIPO − DPO"),
                verdict(&x, &y, false),
            );
        }
        let (x, y) = vs_dpo("mipo", &all);
        push(
            "MIPO",
            "a better frontier overall",
            format!("envelope at KL ≤ {k}, MIPO − DPO"),
            verdict(&x, &y, true),
        );
    }
    if a.has("mallows_theta") && a.has(dpo) {
        let g = "mallows_theta";
        if let Some(high) = stratum("high dispersion") {
            let (x, y) = vs_dpo(g, &high);
            push(
                "MallowsPO",
                "a dispersion-weighted β beats one global β where labels are noisy",
                format!("envelope on high-dispersion prompts at KL ≤ {k}, MallowsPO − DPO"),
                verdict(&x, &y, true),
            );
            let smallest = a.settings(g).first().cloned().unwrap_or_default();
            let smallest_dpo = a.settings(dpo).first().cloned().unwrap_or_default();
            push(
                "MallowsPO",
                "less over-optimisation on high-dispersion prompts",
                format!(
                    "r* lost from the best checkpoint to the last on high-dispersion prompts at the smallest β ({smallest}), MallowsPO − DPO"
                ),
                verdict(
                    &a.overoptimisation(g, &smallest, &high),
                    &a.overoptimisation(dpo, &smallest_dpo, &high),
                    false,
                ),
            );
        }
        if let Some(low) = stratum("low dispersion") {
            let (x, y) = vs_dpo(g, &low);
            push(
                "MallowsPO (control)",
                "no difference where labels are clean",
                format!("envelope on low-dispersion prompts at KL ≤ {k}, MallowsPO − DPO"),
                control(&x, &y),
            );
        }
        if let Some(dec) = stratum("decoupled") {
            let (x, y) = vs_dpo(g, &dec);
            push(
                "MallowsPO (control)",
                "no gain where the reference's entropy does not reveal the dispersion",
                format!("envelope on the decoupled family at KL ≤ {k}, MallowsPO − DPO"),
                control(&x, &y),
            );
        }
    }
    let mmpo = "mmpo (γ calibrated)";
    if a.has(mmpo) && a.has(dpo) {
        let x = a.at_operating(mmpo, k, &all, |c| c.ece);
        let y = a.at_operating(dpo, k, &all, |c| c.ece);
        push(
            "MMPO",
            "better calibrated against the true preference probability",
            format!("ECE vs truth at the operating point (KL ≤ {k}), MMPO − DPO"),
            verdict(&x, &y, false),
        );
        let x = a.at_operating(mmpo, k, &all, |c| c.tie_accuracy);
        let y = a.at_operating(dpo, k, &all, |c| c.tie_accuracy);
        push(
            "MMPO",
            "better on near-ties",
            "near-tie accuracy against r* at the operating point, MMPO − DPO".to_string(),
            verdict(&x, &y, true),
        );
        let (x, y) = vs_dpo(mmpo, &all);
        push(
            "MMPO",
            "a better frontier overall",
            format!("envelope at KL ≤ {k}, MMPO − DPO"),
            verdict(&x, &y, true),
        );
        let useless = "mmpo (γ calibrated, useless scores)";
        if a.has(useless) {
            let x = a.at_operating(useless, k, &all, |c| c.ece);
            push(
                "MMPO (control)",
                "no edge when the scores are useless (noise 3)",
                "ECE vs truth at the operating point, MMPO on useless scores − DPO".to_string(),
                {
                    let (m, w) = verdict(&x, &y_ece(a, dpo, k), false);
                    (
                        m,
                        if w == "holds" {
                            "contradicted (an edge without information)"
                        } else if w == "contradicted" || w.starts_with("inconclusive (within") {
                            "holds (no edge)"
                        } else {
                            w
                        },
                    )
                },
            );
        }
    }
    if let Some(hard) = stratum("hard") {
        if a.has(dpo) {
            push(
                "MPO",
                "DPO on the reference's own pairs cannot move the hard family",
                "DPO's envelope gain on the hard family at KL ≤ 10".to_string(),
                {
                    let (m, w) = verdict(&a.gain(dpo, &hard, 10.0), &zeros, true);
                    (
                        m,
                        if w == "holds" {
                            "contradicted (DPO moved it)"
                        } else {
                            "holds (no gain beyond the interval)"
                        },
                    )
                },
            );
        }
        for g in [
            "ppo (oracle r*)",
            "ppo (reward model)",
            "mpo",
            "mpo (oracle split)",
        ] {
            if a.has(g) {
                push(
                    "MPO",
                    "on-policy PPO (and MPO's PPO stage) can move the hard family",
                    format!("{g}: envelope gain on the hard family at KL ≤ 10"),
                    verdict(&a.gain(g, &hard, 10.0), &zeros, true),
                );
            }
        }
        if a.has("mpo") && a.has("mpo (oracle split)") {
            push(
                "MPO (control)",
                "the reward model's split and reward against the oracle's",
                "envelope at KL ≤ 10, MPO − MPO with the oracle split and r* as PPO's reward"
                    .to_string(),
                {
                    let (m, h, v) = compare(
                        &a.envelope("mpo", &all, 10.0),
                        &a.envelope("mpo (oracle split)", &all, 10.0),
                    );
                    let measured = if h.is_finite() {
                        format!("{m:+.3} ± {h:.3}")
                    } else {
                        format!("{m:+.3}")
                    };
                    let word = match v {
                        Verdict::Lower => "the reward model costs MPO r*",
                        Verdict::Higher => "the reward model's MPO beats the oracle's",
                        Verdict::Within => "no difference beyond the interval",
                        Verdict::Unknown => "inconclusive (too few seeds)",
                    };
                    (measured, word)
                },
            );
        }
        if a.has("mpo") && a.has(dpo) {
            let x = a.envelope("mpo", &all, 10.0);
            for other in [dpo, "ppo (reward model)"] {
                if a.has(other) {
                    push(
                        "MPO",
                        "MPO at least as good as either stage's method alone",
                        format!("envelope at KL ≤ 10, MPO − {other}"),
                        verdict(&x, &a.envelope(other, &all, 10.0), true),
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "## The seed papers' claims\n\n| paper | claim | measured as | difference (± 95%) | verdict |\n|---|---|---|---:|---|"
    );
    if !reward_model_passed {
        for r in rows.iter_mut() {
            if USES_REWARD_MODEL.iter().any(|g| {
                r.measure.contains(&format!("{g}:"))
                    || r.measure.contains(&format!("− {g}"))
                    || r.measure.starts_with("envelope at KL ≤ 10, MPO")
            }) {
                r.verdict = format!(
                    "not evidence: the reward model failed its gate ({})",
                    r.verdict
                );
            }
        }
    }
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.paper, r.claim, r.measure, r.measured, r.verdict
        );
    }
}

fn y_ece(a: &Analysis, g: &str, k: f64) -> Vec<f64> {
    a.at_operating(g, k, &a.strata[0], |c| c.ece)
}

/// The mean (KL, r*) of each (setting, fraction) of `group` over seeds, on stratum `s`.
fn mean_points(a: &Analysis, group: &str, s: &Stratum) -> Vec<(f64, f64)> {
    let mut keys: Vec<(String, u64)> = Vec::new();
    for p in a.points.iter().filter(|p| p.group == group) {
        let key = (p.setting.clone(), p.fraction.to_bits());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.iter()
        .filter_map(|(setting, f)| {
            let cuts: Vec<Cut> = a
                .points
                .iter()
                .filter(|p| p.group == group && &p.setting == setting && p.fraction.to_bits() == *f)
                .map(|p: &Point| p.cut(s))
                .collect();
            let kl: Vec<f64> = cuts
                .iter()
                .map(|c| c.kl)
                .filter(|x| x.is_finite())
                .collect();
            let r: Vec<f64> = cuts
                .iter()
                .map(|c| c.reward)
                .filter(|x| x.is_finite())
                .collect();
            (!kl.is_empty() && !r.is_empty()).then(|| (mean(&kl), mean(&r)))
        })
        .collect()
}

/// The largest KL drawn: points beyond are clipped to the edge of the plot.
const KL_AXIS_MAX: f64 = 12.0;

/// A named, coloured set of (KL, r*) points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// The colour of every group a panel draws, the reference first: the reference black,
/// Best-of-N (the yardstick) grey, and every entrant its own colour by its place among the
/// entrants ([`distinct_color`]), the same in frontier.png and in each panel of strata.png.
fn group_colors(groups: &[String]) -> Vec<(String, RGBColor)> {
    let mut colors = vec![(REFERENCE.to_string(), RGBColor(0, 0, 0))];
    let mut entrants = 0;
    for g in groups {
        let color = if g == BEST_OF_N {
            RGBColor(128, 128, 128)
        } else {
            entrants += 1;
            distinct_color(entrants - 1)
        };
        colors.push((g.clone(), color));
    }
    colors
}

/// One panel: every group's seed-mean points and envelope on stratum `s`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    a: &Analysis,
    s: &Stratum,
    title: &str,
) -> Result<()> {
    let series: Vec<Series> = group_colors(&a.groups)
        .into_iter()
        .map(|(g, color)| {
            let points = mean_points(a, &g, s);
            (g, color, points)
        })
        .collect();
    let clip = |(x, y): (f64, f64)| (x.min(KL_AXIS_MAX), y);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| clip(*p).0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .collect();
    let x1 = xs.iter().copied().fold(1.0, f64::max) * 1.05;
    let (y0, y1) = {
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi.is_finite() {
            let pad = ((hi - lo) * 0.08).max(0.05);
            (lo - pad, hi + pad)
        } else {
            (-1.0, 3.0)
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..x1, y0..y1)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("KL(π‖π_ref), nats (sampled)")
        .y_desc("mean r*")
        .label_style((FONT, 12))
        .draw()
        .map_err(draw_error)?;
    for (_, color, points) in &series {
        let color = *color;
        let pts: Vec<(f64, f64)> = points.iter().copied().map(clip).collect();
        chart
            .draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 3, color.mix(0.6).filled())),
            )
            .map_err(draw_error)?;
        let mut steps = envelope_steps(&pts);
        if let Some(&(_, last)) = steps.last() {
            steps.push((x1, last));
        }
        let mut stair = Vec::new();
        for w in steps.windows(2) {
            stair.push(w[0]);
            stair.push((w[1].0, w[0].1));
        }
        if let Some(last) = steps.last() {
            stair.push(*last);
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                stair,
                color.stroke_width(2),
            )))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// The legend's text size, and the height of one of its rows.
const LEGEND_FONT: u32 = 13;
const LEGEND_ROW: i32 = 22;

/// A legend of `entries` in its own area beside a panel, so it covers no point.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor)],
) -> Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let style =
        TextStyle::from((FONT, LEGEND_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (k, (name, color)) in entries.iter().enumerate() {
        // Rows start level with the top of the plot area, below the caption.
        let y = 48 + LEGEND_ROW * k as i32;
        area.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            color.stroke_width(3),
        ))
        .map_err(draw_error)?;
        area.draw(&Circle::new((16, y), 3, color.filled()))
            .map_err(draw_error)?;
        area.draw(&Text::new(name.clone(), (36, y), style.clone()))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// The width of the frontier's panel; its legend takes what its longest name needs beside it.
const FRONTIER_PANEL: (u32, u32) = (1100, 720);

/// OUT/frontier.png: r* against KL of every entrant's checkpoints (seed means), with each
/// entrant's upper envelope; Best-of-N and the reference; the legend to the right of the plot.
pub(super) fn frontier_plot(out: &Path, a: &Analysis) -> Result<()> {
    let entries = group_colors(&a.groups);
    let mut legend_width = 0;
    for (name, _) in &entries {
        legend_width = legend_width.max(text_width(name, LEGEND_FONT)?);
    }
    let legend_width = legend_width + 48;
    let (w, h) = FRONTIER_PANEL;
    render(out, (w + legend_width, h), |root| {
        let (plot, side) = root.split_horizontally(w);
        panel(
            &plot,
            a,
            &a.strata[0],
            "r* against KL on held-out prompts: checkpoints (mean over seeds) and upper envelopes",
        )?;
        legend(&side, &entries)
    })
}

/// OUT/strata.png: the same per mechanism stratum.
pub(super) fn strata_plot(out: &Path, a: &Analysis) -> Result<()> {
    let strata: Vec<&Stratum> = a.strata.iter().skip(1).take(6).collect();
    render(out, (1500, 900), |root| {
        let areas = root.split_evenly((2, 3));
        for (area, s) in areas.iter().zip(&strata) {
            panel(area, a, s, &s.name)?;
        }
        Ok(())
    })
    .map_err(|e| crate::Error::user(COMMAND, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `c` is a grey (or black): the colours kept for the yardsticks.
    fn grey(c: RGBColor) -> bool {
        c.0 == c.1 && c.1 == c.2
    }

    #[test]
    fn every_entrant_has_its_own_colour_and_none_is_grey() {
        // The default benchmark's entrants: the eighth took Tableau 10's grey, Best-of-N's.
        let default: Vec<String> = [
            BEST_OF_N,
            "dpo",
            "mipo",
            "mallows_theta",
            "mmpo (γ calibrated)",
            "mmpo (γ calibrated, useless scores)",
            "sft on chosen",
            "ppo (oracle r*)",
            "ppo (reward model)",
            "mpo",
            "mpo (oracle split)",
        ]
        .map(String::from)
        .to_vec();
        let many: Vec<String> = (0..60).map(|k| format!("entrant {k}")).collect();
        for groups in [default, many] {
            let colors = group_colors(&groups);
            assert_eq!(colors[0], (REFERENCE.to_string(), RGBColor(0, 0, 0)));
            assert_eq!(colors.len(), groups.len() + 1);
            for (k, (name, color)) in colors.iter().enumerate() {
                match name.as_str() {
                    REFERENCE => {}
                    BEST_OF_N => assert_eq!(*color, RGBColor(128, 128, 128)),
                    _ => assert!(!grey(*color), "{name} is grey: {color:?}"),
                }
                for (other, c) in &colors[k + 1..] {
                    assert_ne!(color, c, "{name} and {other} share a colour");
                }
            }
        }
        // An entrant keeps its colour whether or not Best-of-N is drawn before it.
        let with = group_colors(&[BEST_OF_N.to_string(), "dpo".to_string()]);
        let without = group_colors(&["dpo".to_string()]);
        assert_eq!(with[2], without[1]);
    }
}
