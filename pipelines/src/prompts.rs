//! Prompt files as `poc generate` and on-policy training read them: one JSON object with a
//! `prompt` (a string, or a list of chat messages) per line, tokenized, with the ids that end a
//! completion.

use crate::{Error, Result};
use poc_runtime::data::Tok;
use poc_runtime::data::chat::{Message, parse_messages};
use poc_runtime::model::LlamaConfig;
use poc_runtime::model::generate::check_prompt;
use serde_json::Value;
use std::path::Path;

/// The prefix of these messages (`poc generate` reads prompt files as on-policy runs do).
const COMMAND: &str = "poc generate";

/// One prompt of a file.
pub struct Prompt {
    /// 1-based line.
    pub line: usize,
    /// The `prompt` value as written.
    pub value: Value,
    /// Token ids.
    pub ids: Vec<u32>,
}

/// The token ids of the prompts in JSONL file `path` (as `poc generate` reads them), and the
/// ids that end a completion for `model` (named as on the command line).
pub fn load(
    path: &Path,
    tok: &Tok,
    config: &LlamaConfig,
    model: &str,
) -> Result<(Vec<Vec<u32>>, Vec<u32>)> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::user(COMMAND, format!("cannot read `{label}`: {e}")))?;
    let rows = parse_rows(&text, &label)?;
    let prompts = tokenize(rows, tok, config, false, &label)?;
    let eos = stop_ids(model, config, tok)?;
    Ok((prompts.into_iter().map(|p| p.ids).collect(), eos))
}

/// The `prompt` value of every non-blank line, with its 1-based line number; every bad line is
/// reported at once.
pub fn parse_rows(text: &str, label: &str) -> Result<Vec<(usize, Value)>> {
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
        return Err(Error::user(
            COMMAND,
            format!(
                "{label}: no prompts\n  = hint: each line is a JSON object with a `prompt` (a string or a list of chat messages)"
            ),
        ));
    }
    Ok(rows)
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
    rows: Vec<(usize, Value)>,
    tok: &Tok,
    config: &LlamaConfig,
    chat: bool,
    label: &str,
) -> Result<Vec<Prompt>> {
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
    let path = Path::new(model).join("generation_config.json");
    if path.is_file() {
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
