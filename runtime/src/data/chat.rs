//! The Llama-3 chat template, as Meta-Llama-3-8B-Instruct's `tokenizer_config.json` defines
//! it, and the prompt/completion split TRL makes of a conversational preference row:
//!
//! ```text
//! <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>…
//! ```
//!
//! The prompt is rendered with the generation prompt (the assistant header); the completion is
//! the whole conversation rendered minus the rendered prompt, so prompt + completion is
//! exactly the template applied to the whole conversation.

use serde_json::Value;

/// The text of the beginning-of-text token, which the template puts first.
pub const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";
const ASSISTANT_HEADER: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

/// Reads a JSON message list `[{"role": ..., "content": ...}, ...]`; `what` names it in
/// errors.
pub fn parse_messages(v: &[Value], what: &str) -> Result<Vec<Message>, String> {
    v.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |k: &str| {
                m.get(k)
                    .and_then(|v| v.as_str())
                    .map(String::from)
                    .ok_or_else(|| format!("`{what}` message {} lacks a string `{k}`", i + 1))
            };
            Ok(Message {
                role: field("role")?,
                content: field("content")?,
            })
        })
        .collect()
}

fn turn(m: &Message) -> String {
    format!(
        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
        m.role,
        m.content.trim()
    )
}

/// BOS and every turn of `messages`, complete (each ending with `<|eot_id|>`), with no
/// generation prompt after them.
pub fn render_turns(messages: &[Message]) -> String {
    let mut s = String::from(BEGIN_OF_TEXT);
    for m in messages {
        s.push_str(&turn(m));
    }
    s
}

/// `apply_chat_template(prompt, add_generation_prompt=True)`: BOS, every turn, then the
/// assistant header. The prompt must not be empty (the template puts BOS on the first turn).
pub fn render_prompt(prompt: &[Message]) -> Result<String, String> {
    if prompt.is_empty() {
        return Err("empty prompt".into());
    }
    let mut s = String::from(BEGIN_OF_TEXT);
    for m in prompt {
        s.push_str(&turn(m));
    }
    s.push_str(ASSISTANT_HEADER);
    Ok(s)
}

/// The completion as TRL derives it: the template applied to prompt + `completion`, minus the
/// rendered prompt. That is the first (assistant) message without its header, then any further
/// turns with theirs. The completion must start with an assistant message and say something.
pub fn render_completion(completion: &[Message]) -> Result<String, String> {
    let Some(first) = completion.first() else {
        return Err("empty completion".into());
    };
    if first.role != "assistant" {
        return Err(format!(
            "the completion starts with a `{}` message; it must start with an `assistant` one",
            first.role
        ));
    }
    if completion.iter().all(|m| m.content.trim().is_empty()) {
        return Err("empty completion".into());
    }
    let mut s = format!("{}<|eot_id|>", first.content.trim());
    for m in &completion[1..] {
        s.push_str(&turn(m));
    }
    Ok(s)
}

/// A conversational preference row split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The shared prompt messages.
    pub prompt: Vec<Message>,
    /// The preferred continuation.
    pub chosen: Vec<Message>,
    /// The dispreferred continuation.
    pub rejected: Vec<Message>,
}

/// TRL's implicit prompt: when a row has no `prompt`, it is the longest common prefix of the
/// chosen and rejected conversations.
pub fn split_implicit_prompt(
    mut chosen: Vec<Message>,
    mut rejected: Vec<Message>,
) -> Result<Conversation, String> {
    let common = chosen
        .iter()
        .zip(&rejected)
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return Err(
            "missing field `prompt` (and chosen and rejected share no leading messages to take it from)"
                .into(),
        );
    }
    let chosen_rest = chosen.split_off(common);
    let rejected_rest = rejected.split_off(common);
    Ok(Conversation {
        prompt: chosen,
        chosen: chosen_rest,
        rejected: rejected_rest,
    })
}
