//! `poc generate`: completions of a file of prompts under a model (an HF directory, a `poc run`
//! checkpoint or a preset), decoded with the runtime's KV-cache sampler
//! (poc_runtime::model::generate), one JSON object per prompt on stdout.

use crate::edge::{Failure, progress_bar};
use poc_pipelines::prompts::{read_rows, stop_ids, tokenize};
use poc_runtime::device::DeviceSpec;
use poc_runtime::model::generate::{GenerateError, GenerateOptions, generate_with};
use std::io::Write as _;
use std::path::PathBuf;

/// `poc generate --help`.
pub const ABOUT: &str = "\
Generate a completion for every prompt of a data file under a model, and print one JSON object
per prompt on stdout, in the file's order:
  {\"line\": N, \"prompt\": ..., \"completion\": \"...\", \"tokens\": n, \"finish\": \"eos\" | \"length\"}

Each row of --prompts (a line of JSONL, an element of a JSON array, a row of a .parquet file,
or of --split of a directory or Hub dataset ORG/NAME) is an object with a `prompt` field: a string (tokenized as it is,
with the tokenizer's BOS; with --chat, as one user message under the chat template), or a list
of {\"role\", \"content\"} messages (always rendered with the chat template and its generation
prompt). The chat template is the model's own (chat_template.jinja, else `chat_template` in
tokenizer_config.json), or Llama-3's for a model without one. Blank lines are skipped; any bad
row stops the command naming its line (or a Parquet row's index).

Decoding keeps a KV cache (each step runs only the new token through the model); prompts of a
batch are left-padded with a padding mask and per-row positions, so a prompt gets the same
completion in any batch. --temperature 0 (the default) is greedy; otherwise tokens are drawn
from the softmax of logits / T, restricted to the nucleus of mass --top-p. Every prompt has its
own random stream of --seed, so the same seed gives the same samples at any --batch-size. A
completion ends at an end-of-text token (the config's eos_token_id, generation_config.json's,
the tokenizer's <|eot_id|>), after --max-new-tokens tokens, or at the model's context length;
`tokens` counts the generated tokens, the stop token included; `completion` is their text
without special tokens.";

/// Examples under `poc generate --help`.
pub const EXAMPLES: &str = "Examples:
  poc generate --model tiny --prompts prompts.jsonl
  poc generate --model runs/dpo/checkpoint-400 --prompts world/prompts.jsonl --max-new-tokens 16
  poc generate --model ./Llama-3.2-1B-Instruct --prompts q.jsonl --chat --temperature 0.7 --top-p 0.9 --device cuda";

/// Arguments of `poc generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Model: an HF directory (config.json, *.safetensors, tokenizer.json), a checkpoint
    /// written by `poc run`, a Hugging Face Hub id ORG/NAME[@REVISION] (from the HF cache,
    /// downloaded when missing), or a preset (`tiny`).
    #[arg(long)]
    pub model: String,
    /// Rows with a `prompt` (string or message list): .jsonl, .json or .parquet, or a directory
    /// or Hub dataset id ORG/NAME[@REVISION] (read as --split).
    #[arg(long)]
    pub prompts: PathBuf,
    /// The split of a directory or Hub dataset given as --prompts.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The most tokens generated per prompt (the stop token included).
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: draw only from the most likely tokens whose probability reaches P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f64,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Seed of the sampling streams (one per prompt).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Render string prompts as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// No progress bar on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

/// The prefix of this command's messages.
const COMMAND: &str = "poc generate";

/// Runs `poc generate`.
pub fn run(args: GenerateArgs) -> Result<(), Failure> {
    let spec = DeviceSpec::usable(&args.device).map_err(|e| Failure::user(COMMAND, e))?;
    let mut opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        eos: Vec::new(),
        pad: 0,
        batch_size: args.batch_size,
    };
    opts.check_ranges().map_err(|e| Failure::user(COMMAND, e))?;
    let rows = read_rows(&args.prompts, &args.split)?;
    let device = spec.device();
    let poc_runtime::model::Resolved { model, tok, .. } =
        poc_runtime::model::resolve(&args.model, false, &device)
            .map_err(|e| Failure::user("poc", e))?;
    let prompts = tokenize(rows, &tok, &model.config, args.chat)?;
    opts.eos = stop_ids(&args.model, &model.config, &tok)?;
    opts.pad = tok.pad;
    opts.check(&model.config)
        .map_err(|e| Failure::user(COMMAND, e))?;

    let bar = progress_bar(
        prompts.len() as u64,
        args.no_progress,
        "{bar:30} {pos}/{len} prompts [{elapsed_precise}<{eta_precise}]",
    );
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let mut done: Vec<Option<Vec<u32>>> = vec![None; prompts.len()];
    let mut printed = 0;
    let mut generated = 0usize;
    let mut write_error = None;
    let started = std::time::Instant::now();
    let mut stdout = std::io::stdout().lock();
    let result = generate_with(&model, &ids, &opts, |index, tokens| {
        bar.inc(1);
        generated += tokens.len();
        done[index] = Some(tokens);
        // Print in the file's order: everything up to the first prompt still running.
        while let Some(Some(tokens)) = done.get(printed) {
            let p = &prompts[printed];
            let finish = match tokens.last() {
                Some(t) if opts.eos.contains(t) => "eos",
                _ => "length",
            };
            let row = serde_json::json!({
                "line": p.line,
                "prompt": p.value,
                "completion": tok.decode(tokens),
                "tokens": tokens.len(),
                "finish": finish,
            });
            if write_error.is_none()
                && let Err(e) = writeln!(stdout, "{row}").and_then(|()| stdout.flush())
            {
                write_error = Some(e);
            }
            printed += 1;
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(()) => {}
        Err(GenerateError::BadPrompt { index, message }) => {
            let at = prompts.get(index).map_or("?", |p| p.at.as_str());
            return Err(Failure::user(COMMAND, format!("{at}: {message}")));
        }
        Err(e @ GenerateError::BadOptions(_)) => return Err(Failure::user(COMMAND, e)),
        Err(e @ GenerateError::Read(_)) => return Err(Failure::Internal(e.to_string())),
    }
    if let Some(e) = write_error {
        return Err(Failure::user(
            COMMAND,
            format!("cannot write to stdout: {e}"),
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "poc generate: {} prompts, {generated} tokens in {secs:.1}s ({:.1} tokens/s)",
        prompts.len(),
        generated as f64 / secs.max(1e-9)
    );
    Ok(())
}
