//! `poc bench eval` and `poc bench train`: the flags, a call to [`poc_pipelines::bench`], and
//! the Markdown tables it prints.

use crate::edge::Failure;
use poc_pipelines::bench::{self, Baseline, EvalOptions, TrainOptions, TrainReport};

/// Runs `poc bench eval` and prints its Markdown table.
pub fn eval(rows: usize, repeat: usize) -> Result<(), Failure> {
    // Checked here too (the library checks it) so that a refusal prints no header.
    if rows == 0 {
        return Err(Failure::User("poc: --rows must be at least 1".into()));
    }
    // Printed before the measurement, which takes a while at the default million rows.
    println!(
        "poc bench eval: {rows} random rows, best of {repeat}, loss + gradient per row (CPU)\n"
    );
    let table = bench::eval(&EvalOptions { rows, repeat })?;
    println!("| objective | lowering | rows/s | vs hand-written DPO | vs interpreter |");
    println!("|---|---|---:|---:|---:|");
    for row in table {
        // The baseline's interpreter cell is empty.
        let vs_interp = row
            .vs_interpreter
            .map_or(" ".to_string(), |r| format!(" {r:.1}x "));
        println!(
            "| {} | {} | {:.3e} | {:.2}x |{vs_interp}|",
            row.objective, row.lowering, row.rows_per_sec, row.vs_hand_written
        );
    }
    println!("\nburn timings include moving the columns into and out of tensors.");
    Ok(())
}

/// The shape of `poc bench train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainShape {
    /// Model width.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Decoder blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Preference pairs per step (2x sequences).
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
}

impl From<TrainShape> for bench::TrainShape {
    fn from(s: TrainShape) -> Self {
        bench::TrainShape {
            hidden: s.hidden,
            layers: s.layers,
            pairs: s.pairs,
            seq: s.seq,
            steps: s.steps,
        }
    }
}

/// `poc bench train`: poc's DPO step against PyTorch's on the same shape.
pub fn train(shape: TrainShape, python: Option<std::path::PathBuf>) -> Result<(), Failure> {
    let report = bench::train(&TrainOptions {
        shape: shape.into(),
        python,
    })?;
    print_train(&report);
    Ok(())
}

/// The table of `poc bench train`.
fn print_train(report: &TrainReport) {
    let TrainReport {
        shape, params, poc, ..
    } = report;
    println!(
        "poc bench train: DPO steps, Llama hidden {} x {} layers ({:.1}M params), {} pairs x {} tokens, CPU f32, median of {} steps\n",
        shape.hidden,
        shape.layers,
        *params as f64 / 1e6,
        shape.pairs,
        shape.seq,
        shape.steps
    );
    println!("| implementation | tokens/s | peak RSS (MB) | ratio (tokens/s) |");
    println!("|---|---:|---:|---:|");
    let (poc_rate, poc_mem) = (poc.tokens_per_sec, poc.peak_rss_mb);
    match &report.baseline {
        Baseline::Ran { torch, measured } => {
            println!(
                "| PyTorch {torch} eager (baseline) | {:.0} | {:.0} | 1.00x |",
                measured.tokens_per_sec, measured.peak_rss_mb
            );
            println!(
                "| poc (burn + libtorch, symbolic gradient) | {poc_rate:.0} | {poc_mem:.0} | {:.2}x |",
                report.ratio().unwrap_or(f64::NAN)
            );
        }
        Baseline::Unavailable {
            python,
            script,
            why,
        } => {
            println!(
                "| poc (burn + libtorch, symbolic gradient) | {poc_rate:.0} | {poc_mem:.0} | |"
            );
            println!(
                "\nPyTorch baseline unavailable ({} {}): {why}",
                python.display(),
                script.display()
            );
            println!(
                "  = hint: it needs torch and transformers: {} -m pip install transformers==4.57.1",
                python.display()
            );
        }
    }
}
