//! `poc generate`: completions of a file of prompts under a model (an HF directory, a `poc run`
//! checkpoint or a preset), decoded with the runtime's KV-cache sampler
//! (poc_runtime::model::generate), one JSON object per prompt on stdout.

use crate::Failure;
use poc_runtime::data::Tok;
use poc_runtime::data::chat::{Message, parse_messages, render_prompt};
use poc_runtime::device::DeviceSpec;
use poc_runtime::model::LlamaConfig;
use poc_runtime::model::generate::{GenerateError, GenerateOptions, check_prompt, generate_with};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `poc generate --help`.
pub const ABOUT: &str = "\
Generate a completion for every prompt of a JSONL file under a model, and print one JSON object
per prompt on stdout, in the file's order:
  {\"line\": N, \"prompt\": ..., \"completion\": \"...\", \"tokens\": n, \"finish\": \"eos\" | \"length\"}

Each line of --prompts is a JSON object with a `prompt` field: a string (tokenized as it is,
with the tokenizer's BOS; with --chat, as one user message under the Llama-3 chat template), or
a list of {\"role\", \"content\"} messages (always rendered with the chat template and the
assistant header). Blank lines are skipped; any bad line stops the command naming the line.

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
    /// written by `poc run`, or a preset (`tiny`).
    #[arg(long)]
    pub model: String,
    /// JSONL file with a `prompt` (string or message list) per line.
    #[arg(long)]
    pub prompts: PathBuf,
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
    /// Render string prompts as a user message with the Llama-3 chat template.
    #[arg(long)]
    pub chat: bool,
    /// No progress bar on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

fn user(e: impl std::fmt::Display) -> Failure {
    Failure::User(format!("poc generate: {e}"))
}

/// One prompt of the file.
struct Prompt {
    /// 1-based line.
    line: usize,
    /// The `prompt` value as written.
    value: Value,
    /// Token ids.
    ids: Vec<u32>,
}

/// Runs `poc generate`.
pub fn run(args: GenerateArgs) -> Result<(), Failure> {
    let spec = DeviceSpec::usable(&args.device).map_err(user)?;
    let mut opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        eos: Vec::new(),
        pad: 0,
        batch_size: args.batch_size,
    };
    opts.check_ranges().map_err(user)?;
    let label = args.prompts.display().to_string();
    let text = std::fs::read_to_string(&args.prompts)
        .map_err(|e| user(format!("cannot read `{label}`: {e}")))?;
    let rows = parse_rows(&text, &label)?;
    let device = spec.device();
    let (model, tok, _) = crate::run::resolve_model(&args.model, false, 0, &device)?;
    let prompts = tokenize(rows, &tok, &model.config, args.chat, &label)?;
    opts.eos = stop_ids(&args.model, &model.config, &tok)?;
    opts.pad = tok.pad;
    opts.check(&model.config).map_err(user)?;

    let bar = crate::run::progress_bar(
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
            let line = prompts.get(index).map_or(0, |p| p.line);
            return Err(user(format!("{label}:{line}: {message}")));
        }
        Err(e @ GenerateError::BadOptions(_)) => return Err(user(e)),
        Err(e @ GenerateError::Read(_)) => return Err(Failure::Internal(e.to_string())),
    }
    if let Some(e) = write_error {
        return Err(user(format!("cannot write to stdout: {e}")));
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "poc generate: {} prompts, {generated} tokens in {secs:.1}s ({:.1} tokens/s)",
        prompts.len(),
        generated as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The `prompt` value of every non-blank line, with its 1-based line number; every bad line is
/// reported at once.
/// The token ids of the prompts in JSONL file `path` (as `poc generate` reads them), and the
/// ids that end a completion for `model` (named as on the command line).
pub(crate) fn load_prompts(
    path: &Path,
    tok: &Tok,
    config: &LlamaConfig,
    model: &str,
) -> Result<(Vec<Vec<u32>>, Vec<u32>), Failure> {
    let label = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| user(format!("cannot read `{label}`: {e}")))?;
    let rows = parse_rows(&text, &label)?;
    let prompts = tokenize(rows, tok, config, false, &label)?;
    let eos = stop_ids(model, config, tok)?;
    Ok((prompts.into_iter().map(|p| p.ids).collect(), eos))
}

fn parse_rows(text: &str, label: &str) -> Result<Vec<(usize, Value)>, Failure> {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|v| match v {
                Value::Object(mut o) => o
                    .remove("prompt")
                    .ok_or_else(|| "missing field `prompt`".to_string()),
                _ => Err("expected a JSON object with a `prompt` field".to_string()),
            })
            .and_then(|p| match p {
                Value::String(_) | Value::Array(_) => Ok(p),
                _ => Err("`prompt` must be a string or a list of chat messages".to_string()),
            });
        match row {
            Ok(p) => rows.push((i + 1, p)),
            Err(e) => bad.push(format!("{label}:{}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        return Err(bad_lines(&bad));
    }
    if rows.is_empty() {
        return Err(user(format!(
            "{label}: no prompts\n  = hint: each line is a JSON object with a `prompt` (a string or a list of chat messages)"
        )));
    }
    Ok(rows)
}

/// A user error listing bad lines (the first ten).
fn bad_lines(bad: &[String]) -> Failure {
    let mut msg = format!("poc generate: {} bad prompt line(s):", bad.len());
    for b in bad.iter().take(10) {
        msg.push_str("\n  ");
        msg.push_str(b);
    }
    if bad.len() > 10 {
        msg.push_str(&format!("\n  ... and {} more", bad.len() - 10));
    }
    Failure::User(msg)
}

/// Token ids of every prompt: strings as they are (with the tokenizer's BOS) or, with `chat`,
/// as one user turn; message lists under the chat template with the generation prompt.
fn tokenize(
    rows: Vec<(usize, Value)>,
    tok: &Tok,
    config: &LlamaConfig,
    chat: bool,
    label: &str,
) -> Result<Vec<Prompt>, Failure> {
    let mut prompts = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for (line, value) in rows {
        let ids =
            prompt_ids(&value, tok, chat).and_then(|ids| check_prompt(config, &ids).map(|()| ids));
        match ids {
            Ok(ids) => prompts.push(Prompt { line, value, ids }),
            Err(e) => bad.push(format!("{label}:{line}: {e}")),
        }
    }
    if !bad.is_empty() {
        return Err(bad_lines(&bad));
    }
    Ok(prompts)
}

fn prompt_ids(value: &Value, tok: &Tok, chat: bool) -> Result<Vec<u32>, String> {
    let rendered = match value {
        Value::Array(messages) => Some(parse_messages(messages, "prompt")?),
        Value::String(s) if chat => Some(vec![Message {
            role: "user".into(),
            content: s.clone(),
        }]),
        _ => None,
    };
    match (rendered, value) {
        // The template writes BOS itself.
        (Some(messages), _) => tok.encode(&render_prompt(&messages)?, false),
        (None, Value::String(s)) => {
            let mut ids = tok.encode(s, true)?;
            // A prompt that already begins with the BOS text would get a second BOS.
            if let Some(bos) = tok.bos
                && ids.len() >= 2
                && ids[0] == bos
                && ids[1] == bos
            {
                ids.remove(0);
            }
            Ok(ids)
        }
        (None, _) => Err("`prompt` must be a string or a list of chat messages".into()),
    }
}

/// The tokens that end a completion: the config's `eos_token_id`s, those of the model
/// directory's `generation_config.json` (where instruct models list `<|eot_id|>`), the
/// tokenizer's EOS, and `<|eot_id|>` (which ends every chat turn) where the vocabulary has it.
fn stop_ids(model: &str, config: &LlamaConfig, tok: &Tok) -> Result<Vec<u32>, Failure> {
    let mut ids = config.eos_ids();
    let path = Path::new(model).join("generation_config.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| user(format!("cannot read `{}`: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| user(format!("{}: invalid JSON: {e}", path.display())))?;
        match v.get("eos_token_id") {
            Some(Value::Number(n)) => ids.extend(n.as_u64().and_then(|n| u32::try_from(n).ok())),
            Some(Value::Array(a)) => ids.extend(
                a.iter()
                    .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok())),
            ),
            _ => {}
        }
    }
    ids.push(tok.eos);
    ids.extend(tok.token_id("<|eot_id|>"));
    let mut unique = Vec::new();
    for id in ids {
        if !unique.contains(&id) && (id as usize) < config.vocab_size {
            unique.push(id);
        }
    }
    Ok(unique)
}
