//! TRL preference rows → tokenized pairs → padded, length-bucketed batches.

use super::tokenizer::Tok;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A data problem, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("cannot read `{0}`: {1}")]
    Io(String, std::io::Error),
    /// A bad row under `--strict` (or every row bad).
    #[error("{0}")]
    BadRows(String),
}

/// One completion: prompt + completion ids, and where the completion starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    /// Prompt and completion tokens.
    pub ids: Vec<u32>,
    /// Index of the first completion token.
    pub completion_start: usize,
}

/// A tokenized preference pair with its extra numeric columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// 1-based line in the source file.
    pub line: usize,
    /// The preferred completion.
    pub chosen: Tokenized,
    /// The dispreferred completion.
    pub rejected: Tokenized,
    /// Numeric columns other than prompt/chosen/rejected (e.g. `score_chosen`).
    pub columns: BTreeMap<String, f64>,
}

/// Renders messages with the Llama-3 chat template. A completion (`continuation`) follows a
/// prompt rendered with the generation prompt, so its first assistant turn has no header:
/// prompt + completion is exactly the template applied to the whole conversation.
fn chat(messages: &[Value], generation_prompt: bool, continuation: bool) -> Result<String, String> {
    let mut s = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(|v| v.as_str())
            .ok_or("a message lacks a string `role`")?;
        let content = m
            .get("content")
            .and_then(|v| v.as_str())
            .ok_or("a message lacks a string `content`")?;
        if continuation && i == 0 && role == "assistant" {
            s.push_str(&format!("{}<|eot_id|>", content.trim()));
        } else {
            s.push_str(&format!(
                "<|start_header_id|>{role}<|end_header_id|>\n\n{}<|eot_id|>",
                content.trim()
            ));
        }
    }
    if generation_prompt {
        s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    Ok(s)
}

/// Tokenizes one completion as TRL's DPOTrainer does: the prompt and prompt+completion are
/// encoded with special tokens, and the completion starts where the two diverge.
fn tokenize(
    tok: &Tok,
    prompt: &str,
    completion: &str,
    plain: bool,
    max_length: usize,
) -> Result<Tokenized, String> {
    if completion.trim().is_empty() {
        return Err("empty completion".into());
    }
    // Conversational text already carries <|begin_of_text|> from the template.
    let (prompt_text, full_text, special) = if plain {
        (prompt.to_string(), format!("{prompt}{completion}"), true)
    } else {
        (
            format!("<|begin_of_text|>{prompt}"),
            format!("<|begin_of_text|>{prompt}{completion}"),
            false,
        )
    };
    let p = tok.encode(&prompt_text, special)?;
    let mut ids = tok.encode(&full_text, special)?;
    let start = p.iter().zip(&ids).take_while(|(a, b)| a == b).count();
    if plain {
        ids.push(tok.eos);
    }
    if start + 1 >= max_length {
        return Err(format!(
            "prompt is {start} tokens, not shorter than --max-length {max_length}"
        ));
    }
    ids.truncate(max_length);
    if ids.len() <= start {
        return Err("empty completion".into());
    }
    Ok(Tokenized {
        ids,
        completion_start: start,
    })
}

fn row_to_pair(v: &Value, tok: &Tok, max_length: usize, line: usize) -> Result<Pair, String> {
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let field = |k: &str| obj.get(k).ok_or_else(|| format!("missing field `{k}`"));
    let (prompt, chosen, rejected) = (field("prompt")?, field("chosen")?, field("rejected")?);
    let (prompt_text, chosen_text, rejected_text, plain) = match (prompt, chosen, rejected) {
        (Value::String(p), Value::String(c), Value::String(r)) => {
            (p.clone(), c.clone(), r.clone(), true)
        }
        (Value::Array(p), Value::Array(c), Value::Array(r)) => (
            chat(p, true, false)?,
            chat(c, false, true)?,
            chat(r, false, true)?,
            false,
        ),
        _ => {
            return Err(
                "`prompt`, `chosen`, `rejected` must all be strings or all be message lists".into(),
            );
        }
    };
    let chosen = tokenize(tok, &prompt_text, &chosen_text, plain, max_length)
        .map_err(|e| format!("chosen: {e}"))?;
    let rejected = tokenize(tok, &prompt_text, &rejected_text, plain, max_length)
        .map_err(|e| format!("rejected: {e}"))?;
    let mut columns = BTreeMap::new();
    for (k, v) in obj {
        if matches!(k.as_str(), "prompt" | "chosen" | "rejected") {
            continue;
        }
        if let Some(x) = v.as_f64() {
            columns.insert(k.clone(), x);
        }
    }
    Ok(Pair {
        line,
        chosen,
        rejected,
        columns,
    })
}

/// Reads TRL preference JSONL. Bad rows are reported (line and reason) and skipped, or are
/// an error under `strict`. Returns the pairs and the warnings.
pub fn load_pairs(
    path: &Path,
    tok: &Tok,
    max_length: usize,
    strict: bool,
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| DataError::Io(path.display().to_string(), e))?;
    parse_pairs(&text, &path.display().to_string(), tok, max_length, strict)
}

/// [`load_pairs`] on text already in memory (`label` names it in messages).
pub fn parse_pairs(
    text: &str,
    label: &str,
    tok: &Tok,
    max_length: usize,
    strict: bool,
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    let mut pairs = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let lineno = i + 1;
        let result = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|v| row_to_pair(&v, tok, max_length, lineno));
        match result {
            Ok(p) => pairs.push(p),
            Err(e) => {
                let msg = format!("{label}:{lineno}: {e}");
                if strict {
                    return Err(DataError::BadRows(format!(
                        "{msg}\n  = hint: without --strict, bad rows are skipped with a warning"
                    )));
                }
                bad.push(msg);
            }
        }
    }
    if pairs.is_empty() {
        let mut msg = format!("{label}: no usable preference rows");
        if let Some(first) = bad.first() {
            msg.push_str(&format!(" ({} bad; first: {first})", bad.len()));
        }
        msg.push_str("\n  = hint: each line is a JSON object with `prompt`, `chosen`, `rejected` (strings or message lists)");
        return Err(DataError::BadRows(msg));
    }
    Ok((pairs, bad))
}

/// A padded batch: chosen rows first, then rejected rows (one forward for both).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Indices into the pair list.
    pub pairs: Vec<usize>,
    /// `[2B][T]` token ids, right-padded.
    pub tokens: Vec<Vec<u32>>,
    /// Real-token mask.
    pub mask: Vec<Vec<bool>>,
    /// Completion-token mask.
    pub completion: Vec<Vec<bool>>,
}

/// Length-bucketed batches for one epoch: pairs are shuffled (seeded), sorted by length within
/// windows of 50 batches to cut padding, cut into batches, and the batch order shuffled.
pub fn batches(pairs: &[Pair], batch_size: usize, pad: u32, seed: u64) -> Vec<Batch> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(&mut rng);
    let len = |i: &usize| pairs[*i].chosen.ids.len().max(pairs[*i].rejected.ids.len());
    for window in order.chunks_mut(batch_size.max(1) * 50) {
        window.sort_by_key(len);
    }
    let mut out: Vec<Batch> = order
        .chunks(batch_size.max(1))
        .map(|idx| batch_of(pairs, idx, pad))
        .collect();
    out.shuffle(&mut rng);
    out
}

/// The padded batch of `idx`, in that order.
pub fn batch_of(pairs: &[Pair], idx: &[usize], pad: u32) -> Batch {
    let seqs: Vec<&Tokenized> = idx
        .iter()
        .map(|&i| &pairs[i].chosen)
        .chain(idx.iter().map(|&i| &pairs[i].rejected))
        .collect();
    let t = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1);
    let mut tokens = Vec::new();
    let mut mask = Vec::new();
    let mut completion = Vec::new();
    for s in seqs {
        let n = s.ids.len();
        let mut ids = s.ids.clone();
        ids.resize(t, pad);
        tokens.push(ids);
        mask.push((0..t).map(|j| j < n).collect());
        completion.push((0..t).map(|j| j >= s.completion_start && j < n).collect());
    }
    Batch {
        pairs: idx.to_vec(),
        tokens,
        mask,
        completion,
    }
}
