//! `poc bench eval`, `poc bench train` and `poc bench memory`: the flags, a call to
//! [`poc_pipelines::bench`] or [`poc_pipelines::memory`], and the Markdown tables they print.

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
    /// A preset's shape instead of --hidden and --layers, random weights (e.g. llama3.2-1b:
    /// 1.24B parameters, vocabulary 128,256).
    #[arg(long, value_name = "PRESET")]
    pub preset: Option<String>,
    /// LoRA of rank R on every linear layer, both sides (PyTorch: PEFT).
    #[arg(long, value_name = "R")]
    pub lora: Option<usize>,
    /// bf16 compute with a bf16 base, both sides.
    #[arg(long)]
    pub bf16: bool,
    /// burn's balanced gradient checkpointing on poc's side.
    #[arg(long)]
    pub gradient_checkpointing: bool,
}

impl TryFrom<TrainShape> for bench::TrainShape {
    type Error = Failure;
    fn try_from(s: TrainShape) -> Result<Self, Failure> {
        let names = poc_runtime::model::LlamaConfig::PRESETS;
        let preset = match &s.preset {
            None => None,
            Some(p) => Some(*names.iter().find(|n| **n == p.as_str()).ok_or_else(|| {
                Failure::User(format!(
                    "poc: bench train --preset {p}: no such preset (presets: {})",
                    names.join(", ")
                ))
            })?),
        };
        Ok(bench::TrainShape {
            hidden: s.hidden,
            layers: s.layers,
            pairs: s.pairs,
            seq: s.seq,
            steps: s.steps,
            preset,
            lora: s.lora,
            bf16: s.bf16,
            checkpointing: s.gradient_checkpointing,
        })
    }
}

/// `poc bench train`: poc's DPO step against PyTorch's on the same shape.
pub fn train(shape: TrainShape, python: Option<std::path::PathBuf>) -> Result<(), Failure> {
    let report = bench::train(&TrainOptions {
        shape: shape.try_into()?,
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
    let model = match shape.preset {
        Some(p) => format!("{p}-shaped model (random init)"),
        None => format!("Llama hidden {} x {} layers", shape.hidden, shape.layers),
    };
    let how = match (shape.lora, shape.bf16) {
        (Some(r), true) => format!("LoRA r={r}, bf16 base"),
        (Some(r), false) => format!("LoRA r={r}, f32"),
        (None, true) => "full fine-tune, bf16 compute".to_string(),
        (None, false) => "full fine-tune, f32".to_string(),
    };
    println!(
        "poc bench train: DPO steps, {model} ({:.1}M params), {} pairs x {} tokens, CPU, {how}, median of {} steps\n",
        *params as f64 / 1e6,
        shape.pairs,
        shape.seq,
        shape.steps
    );
    println!("| implementation | tokens/s | peak RSS (MB) | tokens/s ratio | peak RSS ratio |");
    println!("|---|---:|---:|---:|---:|");
    let (poc_rate, poc_mem) = (poc.tokens_per_sec, poc.peak_rss_mb);
    match &report.baseline {
        Baseline::Ran { torch, measured } => {
            println!(
                "| PyTorch {torch} eager, SDPA (baseline) | {:.0} | {:.0} | 1.00x | 1.00x |",
                measured.tokens_per_sec, measured.peak_rss_mb
            );
            println!(
                "| poc (burn + libtorch, symbolic gradient) | {poc_rate:.0} | {poc_mem:.0} | {:.2}x | {:.2}x |",
                report.ratio().unwrap_or(f64::NAN),
                poc_mem / measured.peak_rss_mb
            );
        }
        Baseline::Unavailable {
            python,
            script,
            why,
        } => {
            println!(
                "| poc (burn + libtorch, symbolic gradient) | {poc_rate:.0} | {poc_mem:.0} | | |"
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

/// `poc bench memory`: the plan against measured peaks, and the head's memory curve; with
/// `point`, one measurement (the child's side).
pub fn memory(large: bool, point: Option<Vec<String>>) -> Result<(), Failure> {
    use poc_pipelines::memory::{self, Which};
    use poc_runtime::plan::bytes;
    if let Some(args) = point {
        let p = memory::point_from_args(&args)?;
        println!(
            "{}",
            serde_json::to_string(&p).map_err(|e| Failure::Internal(e.to_string()))?
        );
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Failure::Internal(e.to_string()))?;
    let small = |lora: Option<usize>, bf16: bool| bench::TrainShape {
        hidden: 256,
        layers: 4,
        pairs: 8,
        seq: 128,
        steps: 1,
        preset: None,
        lora,
        bf16,
        checkpointing: false,
    };
    let mut shapes = vec![
        (
            "hidden 256 x 4 layers, 8 pairs x 128, f32 full fine-tune",
            small(None, false),
        ),
        (
            "hidden 256 x 4 layers, 8 pairs x 128, LoRA r=16, bf16",
            small(Some(16), true),
        ),
        (
            "hidden 256 x 4 layers, 8 pairs x 128, f32, gradient checkpointing",
            bench::TrainShape {
                checkpointing: true,
                ..small(None, false)
            },
        ),
        (
            "hidden 512 x 8 layers, 4 pairs x 256, f32 full fine-tune",
            bench::TrainShape {
                hidden: 512,
                layers: 8,
                pairs: 4,
                seq: 256,
                ..small(None, false)
            },
        ),
    ];
    if large {
        shapes.push((
            "llama3.2-1b shape, 2 pairs x 512, LoRA r=16, bf16",
            bench::TrainShape {
                preset: Some("llama3.2-1b"),
                pairs: 2,
                seq: 512,
                ..small(Some(16), true)
            },
        ));
    }
    println!(
        "poc bench memory: the memory plan against the measured peak of two DPO steps (CPU, peak RSS above the process's start)\n"
    );
    println!("| shape | plan | measured | measured / plan |");
    println!("|---|---:|---:|---:|");
    for (name, shape) in &shapes {
        let p = memory::in_child(&exe, &Which::Train(*shape))?;
        println!(
            "| {name} | {} | {} | {:.2} |",
            bytes(p.estimated),
            bytes(p.measured),
            p.measured as f64 / p.estimated as f64
        );
    }
    let (hidden, vocab) = (2048, 128_256);
    println!(
        "\nthe log-prob head at vocabulary {vocab}, hidden {hidden} (forward + backward, f32, peak RSS above its inputs)\n"
    );
    println!("| positions (batch x length) | chunked | full log-softmax | chunked / full |");
    println!("|---:|---:|---:|---:|");
    for n in [256, 1024, 4096, 16384] {
        let chunked = memory::in_child(&exe, &Which::Head(n, hidden, vocab, false))?;
        // The composition at 16,384 positions needs ~34 GB: not measured.
        let full = (n <= 4096)
            .then(|| memory::in_child(&exe, &Which::Head(n, hidden, vocab, true)))
            .transpose()?;
        let (full_cell, ratio) = match full {
            Some(f) => (
                bytes(f.measured),
                format!("{:.3}", chunked.measured as f64 / f.measured as f64),
            ),
            None => (
                format!("(~{} by arithmetic)", bytes(n as u64 * vocab as u64 * 16)),
                String::new(),
            ),
        };
        println!(
            "| {n} | {} | {full_cell} | {ratio} |",
            bytes(chunked.measured)
        );
    }
    Ok(())
}

/// Runs `poc bench dist` and prints its Markdown table.
pub fn dist(
    batch: usize,
    steps: usize,
    processes: Vec<usize>,
    out: std::path::PathBuf,
) -> Result<(), Failure> {
    if batch == 0 || steps == 0 || processes.contains(&0) {
        return Err(Failure::User(
            "poc: --batch, --steps and every --processes count must be at least 1\n".into(),
        ));
    }
    let mut counts = vec![1];
    counts.extend(processes.into_iter().filter(|&n| n > 1));
    println!(
        "poc bench dist: DPO on the tiny model (3.0M parameters, 12 MB of f32 gradients per step), {batch} pairs per process, {steps} timed steps, one CPU thread per process, Gloo on 127.0.0.1\n"
    );
    let runner =
        poc_pipelines::stage::Runner::this_executable(crate::stages::command_line)?.with_threads(1);
    let rows = bench::dist(
        &bench::DistOptions {
            processes: counts,
            batch_per_process: batch,
            steps,
            out,
        },
        &runner,
    )?;
    println!(
        "| processes | global batch | tokens/s | scaling efficiency | all-reduce share of step |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.1}% |",
            r.processes,
            r.batch,
            r.tokens_per_sec,
            r.efficiency,
            100.0 * r.allreduce_share
        );
    }
    println!(
        "\nEfficiency = tokens/s / (processes x the 1-process tokens/s); each process has one core, as each would have one device."
    );
    Ok(())
}
