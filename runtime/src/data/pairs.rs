//! TRL preference rows → tokenized pairs → padded, length-bucketed batches.
//!
//! A row is a JSON object with `prompt`, `chosen` and `rejected`, either all strings or all
//! message lists (`[{"role", "content"}]`, rendered with the tokenizer's chat template: the
//! model's own, or the Llama-3 one for a model without one; a row without `prompt`, or with a
//! string `prompt` beside message lists, as UltraFeedback's, takes the messages chosen and
//! rejected share, as TRL's implicit prompt).
//! Every other numeric field is kept as a column (objectives read e.g. `score_chosen`).
//!
//! A demonstration row, in TRL's SFT formats, has no rejected completion: `prompt` and
//! `completion` (strings or message lists), or `messages` alone (the conversation up to its
//! last message is the prompt, the last message, an assistant's, the completion; the earlier
//! assistant turns are trained on too, as TRL's `assistant_only_loss`). It becomes a
//! pair whose `rejected` is a copy of `chosen`, marked [`Pair::demonstration`]; objectives that
//! read only the chosen side (`sft.po`) train on it, and the training loop then forwards the
//! chosen rows alone.

use super::DataError;
use super::chat::{ChatTemplate, Message, parse_messages, split_implicit_prompt};
use super::rows::{self, Rows};
use super::tokenizer::Tok;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One completion: prompt + completion ids, and where the completion starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    /// Prompt and completion tokens.
    pub ids: Vec<u32>,
    /// Index of the first completion token.
    pub completion_start: usize,
    /// Token ranges before `completion_start` that are trained on too: the earlier assistant
    /// turns of a multi-turn demonstration (`messages`), as TRL's `assistant_only_loss`. Empty
    /// for every other row.
    pub earlier: Vec<std::ops::Range<usize>>,
}

/// A tokenized preference pair with its extra numeric columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// 1-based line in the source file (for rows without lines, a Parquet file's or a JSON
    /// array's, the row's index + 1).
    pub line: usize,
    /// The preferred completion.
    pub chosen: Tokenized,
    /// The dispreferred completion.
    pub rejected: Tokenized,
    /// Numeric columns other than prompt/chosen/rejected (e.g. `score_chosen`).
    pub columns: BTreeMap<String, f64>,
    /// A demonstration row (TRL SFT format): `rejected` is a copy of `chosen`.
    pub demonstration: bool,
}

/// How a row's texts were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Plain strings: the tokenizer adds BOS, poc appends EOS to the completion.
    Plain,
    /// Rendered by the chat template, which writes the special tokens (BOS, end of turn)
    /// itself: tokenized without adding any, as `apply_chat_template(tokenize=True)` does.
    Chat,
}

/// Tokenizes one completion as TRL's DPOTrainer does (`build_tokenized_answer`): the prompt
/// and prompt + completion are encoded, and the completion starts where the two diverge, so a
/// token that merges across the boundary belongs to the completion. A completion longer than
/// `max_length` allows is cut; a prompt that leaves no room for it is an error.
fn tokenize(
    tok: &Tok,
    prompt: &str,
    completion: &str,
    format: Format,
    max_length: usize,
) -> Result<Tokenized, String> {
    let special = format == Format::Plain;
    let encode = |text: &str| -> Result<Vec<u32>, String> {
        let mut ids = tok.encode(text, special)?;
        // A plain prompt that already begins with the BOS text would get a second BOS.
        if let Some(bos) = tok.bos
            && special
            && ids.len() >= 2
            && ids[0] == bos
            && ids[1] == bos
        {
            ids.remove(0);
        }
        Ok(ids)
    };
    let prompt_ids = encode(prompt)?;
    let mut ids = encode(&format!("{prompt}{completion}"))?;
    let start = prompt_ids
        .iter()
        .zip(&ids)
        .take_while(|(a, b)| a == b)
        .count();
    if format == Format::Plain {
        ids.push(tok.eos);
    }
    if start >= max_length {
        return Err(format!(
            "prompt is {start} tokens, leaving no room for the completion under --max-length {max_length}"
        ));
    }
    ids.truncate(max_length);
    if ids.len() <= start {
        return Err("empty completion".into());
    }
    Ok(Tokenized {
        ids,
        completion_start: start,
        earlier: Vec::new(),
    })
}

/// The token ranges of the assistant turns `messages[i]`, `i` in `turns`, inside `ids` (the
/// tokenized conversation): each from the end of the conversation before it rendered with the
/// generation prompt to the end of the conversation through it (after its header, through its
/// end-of-turn token). A turn whose text does not tokenize as a prefix of `ids`, or that reaches
/// the final completion, is left out.
fn turn_ranges(
    tok: &Tok,
    messages: &[Message],
    turns: &[usize],
    ids: &Tokenized,
) -> Result<Vec<std::ops::Range<usize>>, String> {
    let chat = tok.chat_template();
    let mut out = Vec::new();
    for &i in turns {
        let start = tok.encode(&chat.prompt(&messages[..i])?, false)?;
        let end = tok.encode(&chat.render(&messages[..=i], false)?, false)?;
        let prefix = |t: &[u32]| t.len() <= ids.ids.len() && ids.ids[..t.len()] == *t;
        if prefix(&start)
            && prefix(&end)
            && start.len() < end.len()
            && end.len() <= ids.completion_start
        {
            out.push(start.len()..end.len());
        }
    }
    Ok(out)
}

/// The texts of a demonstration row (TRL's SFT formats): (prompt, completion, format, and for a
/// `messages` row the messages of its prompt, whose assistant turns are trained on too).
fn demonstration_texts(
    obj: &serde_json::Map<String, Value>,
    chat: &ChatTemplate,
) -> Result<(String, String, Format, Vec<Message>), String> {
    let list = |v: &Value, what: &str| match v {
        Value::Array(a) => parse_messages(a, what),
        _ => Err(format!("`{what}` must be a message list here")),
    };
    match (obj.get("prompt"), obj.get("completion"), obj.get("messages")) {
        (Some(Value::String(p)), Some(Value::String(c)), None) => {
            if c.trim().is_empty() {
                return Err("completion: empty completion".into());
            }
            Ok((p.clone(), c.clone(), Format::Plain, Vec::new()))
        }
        (Some(p @ Value::Array(_)), Some(c @ Value::Array(_)), None) => {
            let messages = list(p, "prompt")?;
            let prompt = chat.prompt(&messages)?;
            let completion = chat
                .completion(&messages, &list(c, "completion")?)
                .map_err(|e| format!("completion: {e}"))?;
            Ok((prompt, completion, Format::Chat, Vec::new()))
        }
        (None, None, Some(m)) => {
            let mut messages = list(m, "messages")?;
            let last = messages.pop().ok_or("`messages` is empty")?;
            if last.role != "assistant" {
                return Err(format!(
                    "`messages` ends with a `{}` message; the last message of a demonstration is the assistant's",
                    last.role
                ));
            }
            if messages.is_empty() {
                return Err(
                    "`messages` needs a prompt before its last (assistant) message".to_string(),
                );
            }
            let prompt = chat.prompt(&messages)?;
            let completion = chat
                .completion(&messages, std::slice::from_ref(&last))
                .map_err(|e| format!("messages: the last message: {e}"))?;
            Ok((prompt, completion, Format::Chat, messages))
        }
        (_, None, None) => Err("missing field `chosen`".into()),
        _ => Err(
            "a demonstration row has `prompt` and `completion` (both strings or both message lists), or `messages` alone"
                .into(),
        ),
    }
}

/// The texts of a row: (prompt, chosen, rejected, format).
fn row_texts(
    obj: &serde_json::Map<String, Value>,
    chat: &ChatTemplate,
) -> Result<(String, String, String, Format), String> {
    let field = |k: &str| obj.get(k).ok_or_else(|| format!("missing field `{k}`"));
    let (chosen, rejected) = (field("chosen")?, field("rejected")?);
    let messages = |v: &Value, what: &str| -> Result<Option<Vec<Message>>, String> {
        match v {
            Value::Array(a) => parse_messages(a, what).map(Some),
            _ => Ok(None),
        }
    };
    let mixed =
        || "`prompt`, `chosen`, `rejected` must all be strings or all be message lists".to_string();
    let implicit = |c: Vec<Message>, r: Vec<Message>| {
        let conversation = split_implicit_prompt(c, r)?;
        chat_texts(
            chat,
            &conversation.prompt,
            &conversation.chosen,
            &conversation.rejected,
        )
    };
    match obj.get("prompt") {
        Some(Value::String(p)) => match (chosen, rejected) {
            (Value::String(c), Value::String(r)) => {
                for (side, text) in [("chosen", c), ("rejected", r)] {
                    if text.trim().is_empty() {
                        return Err(format!("{side}: empty completion"));
                    }
                }
                Ok((p.clone(), c.clone(), r.clone(), Format::Plain))
            }
            // TRL's `maybe_extract_prompt`: beside conversational completions a string prompt
            // is not the prompt (UltraFeedback's `prompt` repeats the first user message); the
            // messages chosen and rejected share are.
            (Value::Array(_), Value::Array(_)) => {
                let (Some(c), Some(r)) =
                    (messages(chosen, "chosen")?, messages(rejected, "rejected")?)
                else {
                    return Err(mixed());
                };
                implicit(c, r).map_err(|_| {
                    format!(
                        "{}, or message lists that begin with the prompt they share (TRL then ignores a string `prompt`)",
                        mixed()
                    )
                })
            }
            _ => Err(mixed()),
        },
        Some(p @ Value::Array(_)) => {
            let (Some(p), Some(c), Some(r)) = (
                messages(p, "prompt")?,
                messages(chosen, "chosen")?,
                messages(rejected, "rejected")?,
            ) else {
                return Err(mixed());
            };
            chat_texts(chat, &p, &c, &r)
        }
        Some(_) => Err(mixed()),
        None => match (messages(chosen, "chosen")?, messages(rejected, "rejected")?) {
            (Some(c), Some(r)) => implicit(c, r),
            _ => Err("missing field `prompt`".into()),
        },
    }
}

fn chat_texts(
    chat: &ChatTemplate,
    prompt: &[Message],
    chosen: &[Message],
    rejected: &[Message],
) -> Result<(String, String, String, Format), String> {
    let text = chat.prompt(prompt)?;
    let chosen = chat
        .completion(prompt, chosen)
        .map_err(|e| format!("chosen: {e}"))?;
    let rejected = chat
        .completion(prompt, rejected)
        .map_err(|e| format!("rejected: {e}"))?;
    Ok((text, chosen, rejected, Format::Chat))
}

fn row_to_pair(
    v: &Value,
    tok: &Tok,
    max_length: usize,
    line: usize,
    columns: &[String],
) -> Result<Pair, String> {
    let obj = v.as_object().ok_or("expected a JSON object")?;
    for c in columns {
        match obj.get(c) {
            None => return Err(format!("lacks the column `{c}`, which the objective reads")),
            Some(v) if v.as_f64().is_some_and(f64::is_finite) => {}
            Some(v) => {
                return Err(format!(
                    "column `{c}` is {}, not a finite number (the objective reads it)",
                    describe(v)
                ));
            }
        }
    }
    let demonstration = !obj.contains_key("chosen") && !obj.contains_key("rejected");
    if demonstration && obj.contains_key("label") {
        // TRL's unpaired preference (KTO) format: a `label: false` completion is a bad one, and
        // must not be trained on as a demonstration.
        return Err(
            "an unpaired preference row (`prompt`, `completion`, `label`) is not supported; give pairs (`chosen`, `rejected`) or demonstrations without `label`"
                .into(),
        );
    }
    let (chosen, rejected) = if demonstration {
        let (prompt, completion, format, messages) = demonstration_texts(obj, tok.chat_template())?;
        let mut c = tokenize(tok, &prompt, &completion, format, max_length)
            .map_err(|e| format!("completion: {e}"))?;
        // Earlier assistant turns (after some other message) are trained on too.
        let turns: Vec<usize> = (1..messages.len())
            .filter(|&i| messages[i].role == "assistant")
            .collect();
        c.earlier = turn_ranges(tok, &messages, &turns, &c)?;
        (c.clone(), c)
    } else {
        let (prompt, chosen, rejected, format) = row_texts(obj, tok.chat_template())?;
        (
            tokenize(tok, &prompt, &chosen, format, max_length)
                .map_err(|e| format!("chosen: {e}"))?,
            tokenize(tok, &prompt, &rejected, format, max_length)
                .map_err(|e| format!("rejected: {e}"))?,
        )
    };
    let columns = obj
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "prompt" | "chosen" | "rejected" | "completion" | "messages"
            )
        })
        .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
        .collect();
    Ok(Pair {
        line,
        chosen,
        rejected,
        columns,
        demonstration,
    })
}

/// A JSON value as an error message shows it.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("a string ({:?}…)", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Reads TRL preference rows from the file `path` (JSON lines, a `.json` array or JSON lines,
/// `.parquet`; a directory or a Hub dataset id is read as its `train` split: see
/// [`load_pairs_split`]). Bad rows (invalid JSON, a missing or mistyped field, an empty
/// completion, a prompt with no room under `max_length`) are reported by place (a file's line,
/// or a Parquet row's index) and skipped, or are an error under `strict`. Returns the pairs and
/// one message per skipped row; no usable row at all is an error.
pub fn load_pairs(
    path: &Path,
    tok: &Tok,
    max_length: usize,
    strict: bool,
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    load_pairs_split(path, "train", tok, max_length, strict)
}

/// [`load_pairs`] of `split` where `name` is a directory or a Hub dataset id
/// (`ORG/NAME[@REVISION]`, from the Hugging Face cache, downloaded when missing); a file is
/// read whatever `split` says.
pub fn load_pairs_split(
    name: &Path,
    split: &str,
    tok: &Tok,
    max_length: usize,
    strict: bool,
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    load_pairs_reading(name, split, tok, max_length, strict, &[])
}

/// [`load_pairs_split`] for an objective that reads the numeric `columns`: a row that lacks
/// one, or holds something other than a finite number in it, is a bad row (skipped and
/// reported by place, or an error under `strict`).
pub fn load_pairs_reading(
    name: &Path,
    split: &str,
    tok: &Tok,
    max_length: usize,
    strict: bool,
    columns: &[String],
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    let rows = rows::read(name, split)?;
    pairs_from_rows_reading(&rows, tok, max_length, strict, columns)
}

/// [`load_pairs`] on JSON-lines text already in memory (`label` names it in messages).
pub fn parse_pairs(
    text: &str,
    label: &str,
    tok: &Tok,
    max_length: usize,
    strict: bool,
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    pairs_from_rows(&rows::jsonl(text, label), tok, max_length, strict)
}

/// [`parse_pairs`] for an objective that reads the numeric `columns` (as in
/// [`load_pairs_reading`]).
pub fn parse_pairs_reading(
    text: &str,
    label: &str,
    tok: &Tok,
    max_length: usize,
    strict: bool,
    columns: &[String],
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    pairs_from_rows_reading(&rows::jsonl(text, label), tok, max_length, strict, columns)
}

/// The pairs of `rows` (bad rows as in [`load_pairs`]); a pair's `line` is its row's 1-based
/// number ([`rows::Place::number`]).
pub fn pairs_from_rows(
    rows: &Rows,
    tok: &Tok,
    max_length: usize,
    strict: bool,
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    pairs_from_rows_reading(rows, tok, max_length, strict, &[])
}

/// [`pairs_from_rows`] for an objective that reads the numeric `columns` (as in
/// [`load_pairs_reading`]).
pub fn pairs_from_rows_reading(
    rows: &Rows,
    tok: &Tok,
    max_length: usize,
    strict: bool,
    columns: &[String],
) -> Result<(Vec<Pair>, Vec<String>), DataError> {
    let mut pairs = Vec::new();
    let mut bad = Vec::new();
    for row in &rows.rows {
        let result = row
            .value
            .clone()
            .and_then(|v| row_to_pair(&v, tok, max_length, row.place.number(), columns));
        match result {
            Ok(p) => pairs.push(p),
            Err(e) => {
                let msg = format!("{}: {e}", rows.at(row.place));
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
        let mut msg = format!("{}: no usable preference rows", rows.label);
        if let Some(first) = bad.first() {
            msg.push_str(&format!(" ({} bad; first: {first})", bad.len()));
        }
        msg.push_str("\n  = hint: each row (a line of JSONL, an element of a JSON array, a Parquet row) is an object with `prompt`, `chosen`, `rejected` (strings or message lists), or a demonstration: `prompt` and `completion`, or `messages`");
        return Err(DataError::BadRows(msg));
    }
    Ok((pairs, bad))
}

/// A padded batch: chosen rows first, then rejected rows (one forward for both), or the chosen
/// rows alone when nothing reads the rejected side.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Indices into the pair list.
    pub pairs: Vec<usize>,
    /// `[2B][T]` token ids (`[B][T]`, chosen only), right-padded.
    pub tokens: Vec<Vec<u32>>,
    /// Real-token mask.
    pub mask: Vec<Vec<bool>>,
    /// Completion-token mask.
    pub completion: Vec<Vec<bool>>,
}

/// Length-bucketed batches for one epoch: pairs are shuffled (seeded), sorted by length within
/// windows of 50 batches to cut padding, cut into batches, and the batch order shuffled.
/// Without `rejected`, a batch holds the chosen rows alone.
pub fn batches(
    pairs: &[Pair],
    batch_size: usize,
    pad: u32,
    seed: u64,
    rejected: bool,
) -> Vec<Batch> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(&mut rng);
    let len = |i: &usize| {
        let c = pairs[*i].chosen.ids.len();
        if rejected {
            c.max(pairs[*i].rejected.ids.len())
        } else {
            c
        }
    };
    for window in order.chunks_mut(batch_size.max(1) * 50) {
        window.sort_by_key(len);
    }
    let mut out: Vec<Batch> = order
        .chunks(batch_size.max(1))
        .map(|idx| batch_of_sides(pairs, idx, pad, rejected))
        .collect();
    out.shuffle(&mut rng);
    out
}

/// The padded batch of `idx`, in that order (chosen rows, then rejected rows).
pub fn batch_of(pairs: &[Pair], idx: &[usize], pad: u32) -> Batch {
    batch_of_sides(pairs, idx, pad, true)
}

/// [`batch_of`], or without `rejected` the chosen rows alone.
pub fn batch_of_sides(pairs: &[Pair], idx: &[usize], pad: u32, rejected: bool) -> Batch {
    let chosen = idx.iter().map(|&i| &pairs[i].chosen);
    let seqs: Vec<&Tokenized> = if rejected {
        chosen
            .chain(idx.iter().map(|&i| &pairs[i].rejected))
            .collect()
    } else {
        chosen.collect()
    };
    padded(&seqs, pad, idx.to_vec())
}

/// `seqs` right-padded with `pad` to the longest, with their real-token and completion masks;
/// `pairs` is recorded as the batch's pair indices.
pub fn padded(seqs: &[&Tokenized], pad: u32, pairs: Vec<usize>) -> Batch {
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
        completion.push(
            (0..t)
                .map(|j| {
                    j < n && (j >= s.completion_start || s.earlier.iter().any(|r| r.contains(&j)))
                })
                .collect(),
        );
    }
    Batch {
        pairs,
        tokens,
        mask,
        completion,
    }
}
