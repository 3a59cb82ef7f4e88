//! MPO's easy/hard split (Gou & Nguyen 2024, arXiv 2403.19443). A reward model
//! scores both completions of every pair; the signed gap g = r(x, y_w) − r(x, y_l) sends a
//! pair to `easy.jsonl` when g > δ and to `hard.jsonl` otherwise (so pairs the reward model
//! ranks the wrong way round are hard, never easy), each row as it was in the input plus
//! `reward_chosen`, `reward_rejected` and `reward_gap`. Also draws the gap histogram.

use crate::plot::draw::{FONT, draw_error, render};
use crate::{Error, Result};
use plotters::prelude::*;
use poc_runtime::data;
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::to_f64;
use poc_runtime::model::{Resolved, resolve};
use poc_runtime::observe::{self, Rows, Want};
use std::path::{Path, PathBuf};

/// What `poc split` splits, by which reward model, where to.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOptions {
    /// The reward model's directory (a `poc run bt_reward` checkpoint).
    pub reward_model: PathBuf,
    /// TRL preference rows to split (JSON lines, JSON, Parquet, or a directory's or Hub
    /// dataset's `train` split).
    pub data: PathBuf,
    /// δ: a pair is easy when its signed reward gap exceeds δ.
    pub threshold: f64,
    /// Where easy.jsonl, hard.jsonl and gaps.png go.
    pub out: PathBuf,
    /// cpu, cuda or cuda:N.
    pub device: String,
    /// Pairs per forward.
    pub batch_size: usize,
    /// Truncation length.
    pub max_length: usize,
}

impl SplitOptions {
    /// `poc split`'s defaults for everything but the reward model, the data and the output.
    pub fn new(reward_model: PathBuf, data: PathBuf, out: PathBuf) -> SplitOptions {
        SplitOptions {
            reward_model,
            data,
            threshold: 1.0,
            out,
            device: "cpu".into(),
            batch_size: 8,
            max_length: 512,
        }
    }
}

/// The prefix of this command's messages.
const COMMAND: &str = "poc split";

/// The gaps' summary printed at the end.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    /// Pairs with g > δ.
    pub easy: usize,
    /// Pairs with g ≤ δ.
    pub hard: usize,
    /// Pairs with 0 ≤ g ≤ 1 (the paper's statistic).
    pub within_unit: usize,
}

/// The `poc split` command.
pub fn run(args: &SplitOptions) -> Result<()> {
    if !args.threshold.is_finite() {
        return Err(Error::user(
            COMMAND,
            format!("--threshold {}: expected a finite number", args.threshold),
        ));
    }
    if args.batch_size == 0 {
        return Err(Error::user(COMMAND, "--batch-size must be at least 1"));
    }
    let device = DeviceSpec::usable(&args.device)
        .map_err(|e| Error::user(COMMAND, e))?
        .device();
    let dir = args.reward_model.display().to_string();
    if !args.reward_model.is_dir() {
        return Err(Error::user(
            COMMAND,
            format!(
                "--reward-model `{dir}` is not a directory\n  = hint: train one with `poc run bt_reward --data FILE --out DIR` and pass DIR/checkpoint-N"
            ),
        ));
    }
    let Resolved { model, tok, .. } =
        resolve(&dir, false, &device).map_err(|e| Error::user("poc", e))?;
    if model.score.is_none() {
        return Err(Error::user(
            COMMAND,
            format!(
                "`{dir}` is a causal language model, not a reward model (its checkpoint has no `score.weight`)\n  = hint: train one with `poc run bt_reward`"
            ),
        ));
    }
    let rows = data::rows::read(&args.data, "train").map_err(|e| Error::user(COMMAND, e))?;
    let (pairs, bad) = data::pairs::pairs_from_rows(&rows, &tok, args.max_length, false)
        .map_err(|e| Error::user(COMMAND, e))?;
    for b in &bad {
        eprintln!("poc split: skipped {b}");
    }
    // Each pair's row as it was read, by the pair's 1-based number.
    let by_number: std::collections::HashMap<usize, &serde_json::Value> = rows
        .rows
        .iter()
        .filter_map(|r| Some((r.place.number(), r.value.as_ref().ok()?)))
        .collect();
    std::fs::create_dir_all(&args.out).map_err(|e| {
        Error::user(
            COMMAND,
            format!("cannot create `{}`: {e}", args.out.display()),
        )
    })?;
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    let mut easy = String::new();
    let mut hard = String::new();
    let mut gaps = Vec::with_capacity(pairs.len());
    let mut counts = Counts::default();
    let idx: Vec<usize> = (0..pairs.len()).collect();
    for chunk in idx.chunks(args.batch_size) {
        let batch = data::pairs::batch_of(&pairs, chunk, tok.pad);
        let stats = observe::stats(&model, Rows::from(&batch), Want::REWARDS, &device);
        let r = to_f64(
            stats
                .rewards
                .ok_or_else(|| Error::Internal("the reward model returned no rewards".into()))?,
        );
        let b = chunk.len();
        for (j, &i) in chunk.iter().enumerate() {
            let (rc, rr) = (r[j], r[b + j]);
            let gap = rc - rr;
            let line = pairs[i].line;
            let mut row: serde_json::Value = by_number
                .get(&line)
                .map(|v| (*v).clone())
                .ok_or_else(|| Error::Internal(format!("row {line} vanished")))?;
            if let Some(obj) = row.as_object_mut() {
                obj.insert("reward_chosen".into(), rc.into());
                obj.insert("reward_rejected".into(), rr.into());
                obj.insert("reward_gap".into(), gap.into());
            }
            let target = if gap > args.threshold {
                counts.easy += 1;
                &mut easy
            } else {
                counts.hard += 1;
                &mut hard
            };
            target.push_str(&row.to_string());
            target.push('\n');
            if (0.0..=1.0).contains(&gap) {
                counts.within_unit += 1;
            }
            gaps.push(gap);
        }
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    for (name, body) in [("easy.jsonl", &easy), ("hard.jsonl", &hard)] {
        let path = args.out.join(name);
        poc_runtime::model::load::write_atomic(&path, body.as_bytes())
            .map_err(|e| Error::user(COMMAND, e))?;
    }
    let png = args.out.join("gaps.png");
    histogram(&gaps, args.threshold, &png)?;
    let n = gaps.len().max(1) as f64;
    eprintln!(
        "poc split: {} pairs -> {} easy (gap > {}), {} hard; {:.0}% of gaps within [0, 1]; {}, {}, {}",
        gaps.len(),
        counts.easy,
        args.threshold,
        counts.hard,
        100.0 * counts.within_unit as f64 / n,
        args.out.join("easy.jsonl").display(),
        args.out.join("hard.jsonl").display(),
        png.display()
    );
    Ok(())
}

/// The histogram of reward gaps with the threshold δ marked, as a PNG.
fn histogram(gaps: &[f64], threshold: f64, out: &Path) -> Result<()> {
    let finite: Vec<f64> = gaps.iter().copied().filter(|g| g.is_finite()).collect();
    let lo = finite
        .iter()
        .copied()
        .fold(threshold, f64::min)
        .min(threshold - 1.0);
    let hi = finite
        .iter()
        .copied()
        .fold(threshold, f64::max)
        .max(threshold + 1.0);
    let bins = 40usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for g in &finite {
        let k = (((g - lo) / width) as usize).min(bins - 1);
        counts[k] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    render(out, (900, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("reward gap r(chosen) − r(rejected)", (FONT, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("gap")
            .y_desc("pairs")
            .label_style((FONT, 15))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(k, &c)| {
                let x0 = lo + k as f64 * width;
                let easy = x0 >= threshold;
                let color = if easy {
                    RGBColor(31, 119, 180)
                } else {
                    RGBColor(255, 127, 14)
                };
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], color.filled())
            }))
            .map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(threshold, 0.0), (threshold, top)],
                BLACK.stroke_width(2),
            )))
            .map_err(draw_error)?
            .label(format!("δ = {threshold}: hard (orange) | easy (blue)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .draw()
            .map_err(draw_error)?;
        Ok(())
    })
}
