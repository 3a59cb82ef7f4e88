//! Prompt files as `poc generate` and on-policy training read them: rows with a `prompt` (a
//! string, or a list of chat messages), from JSON lines, JSON, Parquet, a directory's split or
//! a Hub dataset id's (`poc_runtime::data::rows`), tokenized, with the ids that end a completion.

use crate::{Error, Result};
use poc_runtime::data::Tok;
use poc_runtime::data::chat::{Message, parse_messages};
use poc_runtime::data::rows::{self, Rows};
use poc_runtime::model::LlamaConfig;
use poc_runtime::model::generate::check_prompt;
use serde_json::Value;
use std::path::Path;

/// The prefix of these messages (`poc generate` reads prompt files as on-policy runs do).
const COMMAND: &str = "poc generate";

/// One prompt of a file.
pub struct Prompt {
    /// 1-based line (a row's index + 1 where rows have no lines).
    pub line: usize,
    /// Where the row is, as messages name it (`file:LINE`, `file, row INDEX`).
    pub at: String,
    /// The `prompt` value as written.
    pub value: Value,
    /// Token ids.
    pub ids: Vec<u32>,
}

/// A row's `prompt` as written, before tokenization.
pub struct Written {
    /// 1-based line (a row's index + 1 where rows have no lines).
    pub line: usize,
    /// Where the row is, as messages name it (`file:LINE`, `file, row INDEX`).
    pub at: String,
    /// The `prompt` value.
    pub value: Value,
}

/// The token ids of the prompts `name` holds (a file, or `split` of a directory or Hub
/// dataset id; as `poc generate` reads them), and the ids that end a completion for `model`
/// (named as on the command line).
pub fn load(
    name: &Path,
    split: &str,
    tok: &Tok,
    config: &LlamaConfig,
    model: &str,
) -> Result<(Vec<Vec<u32>>, Vec<u32>)> {
    let rows = read_rows(name, split)?;
    let prompts = tokenize(rows, tok, config, false)?;
    let eos = stop_ids(model, config, tok)?;
    Ok((prompts.into_iter().map(|p| p.ids).collect(), eos))
}

/// The `prompt` of every row of `name` (a file, or `split` of a directory or Hub dataset id);
/// every bad row is reported at once.
pub fn read_rows(name: &Path, split: &str) -> Result<Vec<Written>> {
    let rows = rows::read(name, split).map_err(|e| Error::user(COMMAND, e))?;
    prompt_rows(&rows)
}

/// The `prompt` value of every non-blank line of JSON-lines `text` (`label` names it); every
/// bad line is reported at once.
pub fn parse_rows(text: &str, label: &str) -> Result<Vec<Written>> {
    prompt_rows(&rows::jsonl(text, label))
}

/// The `prompt` of every row; every bad row is reported at once.
fn prompt_rows(rows: &Rows) -> Result<Vec<Written>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for row in &rows.rows {
        let prompt = row
            .value
            .clone()
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
        let at = rows.at(row.place);
        match prompt {
            Ok(value) => out.push(Written {
                line: row.place.number(),
                at,
                value,
            }),
            Err(e) => bad.push(format!("{at}: {e}")),
        }
    }
    if !bad.is_empty() {
        return Err(bad_lines(&bad));
    }
    if out.is_empty() {
        return Err(Error::user(
            COMMAND,
            format!(
                "{}: no prompts\n  = hint: each row (a line of JSONL, an element of a JSON array, a Parquet row) is an object with a `prompt` (a string or a list of chat messages)",
                rows.label
            ),
        ));
    }
    Ok(out)
}

/// A user error listing bad lines (the first ten).
fn bad_lines(bad: &[String]) -> Error {
    let mut msg = format!("poc generate: {} bad prompt line(s):", bad.len());
    for b in bad.iter().take(10) {
        msg.push_str("\n  ");
        msg.push_str(b);
    }
    if bad.len() > 10 {
        msg.push_str(&format!("\n  ... and {} more", bad.len() - 10));
    }
    Error::User(msg)
}

/// Token ids of every prompt: strings as they are (with the tokenizer's BOS) or, with `chat`,
/// as one user turn; message lists under the chat template with the generation prompt.
pub fn tokenize(
    rows: Vec<Written>,
    tok: &Tok,
    config: &LlamaConfig,
    chat: bool,
) -> Result<Vec<Prompt>> {
    let mut prompts = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for Written { line, at, value } in rows {
        let ids =
            prompt_ids(&value, tok, chat).and_then(|ids| check_prompt(config, &ids).map(|()| ids));
        match ids {
            Ok(ids) => prompts.push(Prompt {
                line,
                at,
                value,
                ids,
            }),
            Err(e) => bad.push(format!("{at}: {e}")),
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
        (Some(messages), _) => tok.encode(&tok.chat_template().prompt(&messages)?, false),
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
pub fn stop_ids(model: &str, config: &LlamaConfig, tok: &Tok) -> Result<Vec<u32>> {
    let mut ids = config.eos_ids();
    // The model's directory (a Hub id's snapshot, resolved and cached by now).
    let dir = poc_runtime::model::resolve::local_dir(model, poc_runtime::hub::Want::Everything)
        .map_err(|e| Error::user(COMMAND, e))?;
    if let Some(path) = dir
        .map(|d| d.join("generation_config.json"))
        .filter(|p| p.is_file())
    {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::user(COMMAND, format!("cannot read `{}`: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::user(COMMAND, format!("{}: invalid JSON: {e}", path.display())))?;
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
