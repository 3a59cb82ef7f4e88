//! Chat templates, and the prompt/completion split TRL makes of a conversational row.
//!
//! A model's own template is its `chat_template.jinja`, else the `chat_template` of its
//! `tokenizer_config.json` (a string, or a list of named templates of which the one named
//! `default` is used), as transformers finds it. It is rendered with minijinja set up as
//! transformers sets up Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls,
//! `{% generation %}`, `raise_exception`, `strftime_now`, its `tojson`, Python's string and dict
//! methods, `True`/`None` printed as Python prints them), with the variables
//! `apply_chat_template` passes: `messages`, `add_generation_prompt`, `tools` and `documents`
//! (none), and the special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, …). A
//! model without a template (the built-in presets, a directory with none) gets
//! Meta-Llama-3-8B-Instruct's:
//!
//! ```text
//! <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>…
//! ```
//!
//! The prompt is rendered with the generation prompt; the completion is the whole conversation
//! rendered minus the rendered prompt, so prompt + completion is exactly the template applied
//! to the whole conversation. The rendered text already holds the special tokens the template
//! writes (BOS among them), so it is tokenized without adding any, as
//! `apply_chat_template(tokenize=True)` does.

use super::DataError;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, syntax::SyntaxConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The text of the beginning-of-text token, which the built-in template puts first.
pub const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";

/// Meta-Llama-3-8B-Instruct's `chat_template`: the template of a model that has none.
pub const LLAMA3_CHAT_TEMPLATE: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// The files a model directory's template is read from, in transformers' order of precedence.
const TEMPLATE_FILE: &str = "chat_template.jinja";
const CONFIG_FILE: &str = "tokenizer_config.json";

/// The special tokens transformers passes to a template (its `special_tokens_map`), besides
/// `additional_special_tokens`.
const SPECIAL_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The one template in each environment.
const NAME: &str = "chat_template";

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

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The file the template was read from; `None` for the built-in one.
    origin: Option<PathBuf>,
    /// `bos_token`, `eos_token`, … as the template sees them.
    tokens: Vec<(String, minijinja::Value)>,
    /// The model's `tokenizer_config.json` and `chat_template.jinja`, verbatim, as read: a
    /// checkpoint carries them on, so that it renders chats as its base model did.
    files: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The built-in template: Meta-Llama-3-8B-Instruct's, with `<|begin_of_text|>` as BOS.
    pub fn llama3() -> ChatTemplate {
        let bos = vec![("bos_token".to_string(), BEGIN_OF_TEXT.into())];
        ChatTemplate::compile(LLAMA3_CHAT_TEMPLATE.to_string(), bos, None)
            .expect("the built-in chat template compiles (tested)")
    }

    /// The template of the model directory `dir`: `chat_template.jinja`, else the
    /// `chat_template` of `tokenizer_config.json` (a string, or the entry named `default` of a
    /// list of `{"name", "template"}`), else the built-in one. Special tokens come from
    /// `tokenizer_config.json` (a string or an `{"content": ...}` object each). A template that
    /// does not compile, or a `tokenizer_config.json` that cannot be read, is an error naming
    /// the file.
    pub fn from_model_dir(dir: &Path) -> Result<ChatTemplate, DataError> {
        let config_path = dir.join(CONFIG_FILE);
        let template_path = dir.join(TEMPLATE_FILE);
        let bad = |path: &Path, message: String| DataError::ChatTemplate {
            path: path.to_path_buf(),
            message,
        };
        let config_text = read_if_present(&config_path)?;
        let template_text = read_if_present(&template_path)?;
        let config = config_text
            .as_deref()
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|e| bad(&config_path, format!("invalid JSON: {e}")))?;
        let tokens = match &config {
            Some(c) => special_tokens(c).map_err(|m| bad(&config_path, m))?,
            None => Vec::new(),
        };
        let files = [
            (CONFIG_FILE, config_text),
            (TEMPLATE_FILE, template_text.clone()),
        ]
        .into_iter()
        .filter_map(|(name, text)| text.map(|t| (name, t)))
        .collect();
        let (source, path) = match (template_text, &config) {
            (Some(text), _) => (text, template_path),
            (None, Some(c)) => match config_template(c).map_err(|m| bad(&config_path, m))? {
                Some(text) => (text, config_path),
                None => return Ok(ChatTemplate::llama3().with_files(files)),
            },
            (None, None) => return Ok(ChatTemplate::llama3().with_files(files)),
        };
        let mut template = ChatTemplate::compile(source, tokens, Some(path.clone()))
            .map_err(|e| bad(&path, e.to_string()))?;
        template.files = files;
        Ok(template)
    }

    fn with_files(mut self, files: Vec<(&'static str, String)>) -> ChatTemplate {
        self.files = files;
        self
    }

    /// Compiles `source` in an environment set up as transformers sets up Jinja2.
    fn compile(
        source: String,
        tokens: Vec<(String, minijinja::Value)>,
        origin: Option<PathBuf>,
    ) -> Result<ChatTemplate, minijinja::Error> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Python prints `True`, `False` and `None` where minijinja would print `true`, ….
        env.set_formatter(|out, state, value| match value.kind() {
            ValueKind::Bool | ValueKind::None => {
                let python = match (value.is_none(), value.is_true()) {
                    (true, _) => "None",
                    (false, true) => "True",
                    (false, false) => "False",
                };
                out.write_str(python).map_err(minijinja::Error::from)
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, without_generation_tags(&source))?;
        Ok(ChatTemplate {
            env,
            origin,
            tokens,
            files: Vec::new(),
        })
    }

    /// The file the template was read from; `None` for the built-in one.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    fn described(&self) -> String {
        match &self.origin {
            Some(path) => format!("the chat template of `{}`", path.display()),
            None => "the built-in Llama-3 chat template".to_string(),
        }
    }

    /// `apply_chat_template(messages, add_generation_prompt=..., tokenize=False)`. A template
    /// that refuses the conversation (`raise_exception`) or fails on it is an error saying
    /// which template and why.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                minijinja::Value::from_pairs([
                    ("role", m.role.as_str()),
                    ("content", m.content.as_str()),
                ])
            })
            .collect();
        let mut vars: Vec<(String, minijinja::Value)> = vec![
            ("messages".into(), messages.into()),
            ("add_generation_prompt".into(), add_generation_prompt.into()),
            ("tools".into(), ().into()),
            ("documents".into(), ().into()),
        ];
        vars.extend(self.tokens.iter().cloned());
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| format!("{}: {e}", self.described()))?;
        template
            .render(minijinja::Value::from_pairs(vars))
            .map_err(|e| match raised(&e) {
                Some(message) => {
                    format!("{} rejects the conversation: {message}", self.described())
                }
                None => format!("{} fails on the conversation: {e}", self.described()),
            })
    }

    /// `apply_chat_template(prompt, add_generation_prompt=True)`. The prompt must not be empty.
    pub fn prompt(&self, prompt: &[Message]) -> Result<String, String> {
        if prompt.is_empty() {
            return Err("empty prompt".into());
        }
        self.render(prompt, true)
    }

    /// The completion as TRL derives it: the template applied to `prompt` + `completion`,
    /// minus [`ChatTemplate::prompt`]. The completion must start with an assistant message and
    /// say something, and the rendered prompt must begin the rendered conversation.
    pub fn completion(&self, prompt: &[Message], completion: &[Message]) -> Result<String, String> {
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
        let head = self.prompt(prompt)?;
        let whole = self.render(&[prompt, completion].concat(), false)?;
        match whole.strip_prefix(&head) {
            Some(rest) => Ok(rest.to_string()),
            None => Err(format!(
                "{} does not render the conversation as the prompt (with its generation prompt) followed by the completion, so the completion cannot be split off it",
                self.described()
            )),
        }
    }

    /// Writes the model's `tokenizer_config.json` and `chat_template.jinja` (those it had)
    /// into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        for (name, text) in &self.files {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
        }
        Ok(())
    }
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

/// `source` with transformers' `{% generation %}` … `{% endgeneration %}` (which marks the
/// assistant's text for `return_assistant_tokens_mask` and renders its body unchanged) written
/// as `{% if true %}` … `{% endif %}`, keeping any whitespace control, as minijinja has no such
/// tag.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        let Some(end) = tag.find("%}") else {
            break;
        };
        let inner = &tag[2..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let replaced = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replaced {
            Some(r) => out.push_str(&format!("{{%{open} {r} {close}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The text of `path`, or `None` when there is no such file.
fn read_if_present(path: &Path) -> Result<Option<String>, DataError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The `chat_template` of a `tokenizer_config.json`, if it has one.
fn config_template(config: &Value) -> Result<Option<String>, String> {
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Array(entries)) => {
            let mut names = Vec::new();
            for entry in entries {
                let field = |k: &str| entry.get(k).and_then(Value::as_str);
                match (field("name"), field("template")) {
                    (Some("default"), Some(text)) => return Ok(Some(text.to_string())),
                    (Some(name), Some(_)) => names.push(format!("`{name}`")),
                    _ => {
                        return Err(
                            "a `chat_template` list entry lacks a string `name` or `template`"
                                .into(),
                        );
                    }
                }
            }
            Err(format!(
                "`chat_template` lists templates named {} but none named `default`, the one used for chat data",
                names.join(", ")
            ))
        }
        Some(_) => Err(
            "`chat_template` must be a string or a list of {\"name\", \"template\"} objects".into(),
        ),
    }
}

/// The special tokens of a `tokenizer_config.json` as transformers passes them to templates:
/// each one that is set, as a string.
fn special_tokens(config: &Value) -> Result<Vec<(String, minijinja::Value)>, String> {
    let text = |key: &str, v: &Value| -> Result<Option<String>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Value::Object(o) => match o.get("content") {
                Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
                _ => Err(format!("`{key}` is an object without a string `content`")),
            },
            _ => Err(format!(
                "`{key}` must be a string or an object with a string `content`"
            )),
        }
    };
    let mut tokens = Vec::new();
    for key in SPECIAL_TOKENS {
        if let Some(token) = config.get(key).map(|v| text(key, v)).transpose()?.flatten() {
            tokens.push((key.to_string(), token.into()));
        }
    }
    const ADDITIONAL: &str = "additional_special_tokens";
    match config.get(ADDITIONAL) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            let mut all = Vec::new();
            for v in list {
                all.extend(text(ADDITIONAL, v)?);
            }
            if !all.is_empty() {
                tokens.push((ADDITIONAL.to_string(), all.into()));
            }
        }
        Some(_) => return Err(format!("`{ADDITIONAL}` must be a list")),
    }
    Ok(tokens)
}

/// The error of `raise_exception`, recognised by [`raised`].
#[derive(Debug)]
struct Raised;

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for Raised {}

/// `raise_exception(message)`: the template refuses the conversation.
fn raise_exception(message: String) -> Result<minijinja::Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message).with_source(Raised))
}

/// The message of `raise_exception`, if that is what `e` is.
fn raised(e: &minijinja::Error) -> Option<&str> {
    let source = std::error::Error::source(e)?;
    source.downcast_ref::<Raised>()?;
    e.detail()
}

/// `strftime_now(format)`: the local time, as Python's `datetime.now().strftime(format)`.
fn strftime_now(format: &str) -> Result<String, minijinja::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: `{format}` is not a strftime format"),
        )
    })?;
    Ok(out)
}

/// transformers' `tojson`: Python's `json.dumps(value, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` with those keywords, which (unlike Jinja's own filter)
/// leaves HTML characters alone.
fn tojson(value: &minijinja::Value, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let json = Json {
        indent,
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        separators: match separators.as_deref() {
            Some([item, key]) => (item.clone(), key.clone()),
            Some(_) => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: `separators` must be two strings",
                ));
            }
            // Python's defaults: no space after the comma when indenting.
            None if indent.is_some() => (",".into(), ": ".into()),
            None => (", ".into(), ": ".into()),
        },
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    json.write(&mut out, value, 0)?;
    Ok(out)
}

/// The options of [`tojson`].
struct Json {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
    /// (between items, between a key and its value)
    separators: (String, String),
}

impl Json {
    fn write(
        &self,
        out: &mut String,
        v: &minijinja::Value,
        depth: usize,
    ) -> Result<(), minijinja::Error> {
        match v.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&v.to_string()),
            ValueKind::String => self.string(out, &v.to_string()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<minijinja::Value> = v.try_iter()?.collect();
                self.container(out, ('[', ']'), items.len(), depth, |out, i| {
                    self.write(out, &items[i], depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<minijinja::Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|k| k.to_string());
                }
                self.container(out, ('{', '}'), keys.len(), depth, |out, i| {
                    // Python writes non-string keys (numbers, booleans) as strings.
                    self.string(out, &keys[i].to_string());
                    out.push_str(&self.separators.1);
                    self.write(out, &v.get_item(&keys[i])?, depth + 1)
                })?;
            }
            kind => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of type {kind} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    /// `n` items between `open` and `close`, one per line under `indent`.
    fn container(
        &self,
        out: &mut String,
        (open, close): (char, char),
        n: usize,
        depth: usize,
        mut item: impl FnMut(&mut String, usize) -> Result<(), minijinja::Error>,
    ) -> Result<(), minijinja::Error> {
        out.push(open);
        if n == 0 {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, depth: usize| {
            if let Some(indent) = self.indent {
                out.push('\n');
                out.push_str(&" ".repeat(indent * depth));
            }
        };
        for i in 0..n {
            if i > 0 {
                out.push_str(&self.separators.0);
            }
            newline(out, depth + 1);
            item(out, i)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    /// A JSON string as Python writes it: `"`, `\` and control characters escaped (`\n`,
    /// `\u001f`), and under `ensure_ascii` everything outside printable ASCII as `\uXXXX`.
    fn string(&self, out: &mut String, s: &str) {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        if !self.ensure_ascii {
            out.push_str(&quoted);
            return;
        }
        for c in quoted.chars() {
            if (' '..='~').contains(&c) {
                out.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    fn template(source: &str) -> ChatTemplate {
        let tokens = vec![
            ("bos_token".to_string(), "<s>".into()),
            ("eos_token".to_string(), "</s>".into()),
        ];
        ChatTemplate::compile(source.to_string(), tokens, Some("t.jinja".into())).unwrap()
    }

    /// A ChatML-like template with a default system block, written with block tags on their
    /// own lines (`trim_blocks` drops the newline after a block tag, not after `{{ }}`). The
    /// expected renderings are Jinja2's under transformers' settings.
    const CHATML: &str = "{{ bos_token }}
{% if messages[0].role != 'system' %}
<|im_start|>system
You are helpful.<|im_end|>
{% endif %}
{% for m in messages %}
<|im_start|>{{ m.role }}
{{ m.content.strip() }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}
";

    #[test]
    fn the_built_in_template_is_llama3s() {
        let t = ChatTemplate::llama3();
        assert_eq!(t.origin(), None);
        let prompt = [msg("system", "Be brief. "), msg("user", "  Hi")];
        assert_eq!(
            t.prompt(&prompt).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let completion = [msg("assistant", "Hello. "), msg("user", "More")];
        assert_eq!(
            t.completion(&prompt, &completion).unwrap(),
            "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nMore<|eot_id|>"
        );
    }

    #[test]
    fn a_template_renders_its_system_block_turns_and_generation_prompt() {
        let t = template(CHATML);
        let prompt = [msg("user", " Hi ")];
        let head = t.prompt(&prompt).unwrap();
        assert_eq!(
            head,
            "<s>\n<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&prompt, false).unwrap(),
            head.strip_suffix("<|im_start|>assistant\n").unwrap()
        );
        // Multi-turn: the completion is everything after the generation prompt.
        let completion = [
            msg("assistant", "Hello."),
            msg("user", "Again"),
            msg("assistant", "Hello again."),
        ];
        assert_eq!(
            t.completion(&prompt, &completion).unwrap(),
            "Hello.<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\nHello again.<|im_end|>\n"
        );
        // A system message replaces the default block.
        let with_system = [msg("system", "Be brief."), msg("user", "Hi")];
        assert!(
            t.prompt(&with_system)
                .unwrap()
                .starts_with("<s>\n<|im_start|>system\nBe brief.<|im_end|>\n")
        );
    }

    #[test]
    fn raise_exception_is_an_error_with_the_templates_message() {
        let t = template(
            "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System messages are not supported') }}{% endif %}{{ m.content }}{% endfor %}",
        );
        let err = t
            .prompt(&[msg("system", "x"), msg("user", "y")])
            .unwrap_err();
        assert_eq!(
            err,
            "the chat template of `t.jinja` rejects the conversation: System messages are not supported"
        );
        assert_eq!(t.prompt(&[msg("user", "y")]).unwrap(), "y");
        // Other failures name the template and say what went wrong.
        let t = template("{{ messages | no_such_filter }}");
        let err = t.prompt(&[msg("user", "y")]).unwrap_err();
        assert!(
            err.starts_with("the chat template of `t.jinja` fails on the conversation: ")
                && err.contains("no_such_filter"),
            "{err}"
        );
    }

    #[test]
    fn a_completion_that_does_not_follow_the_rendered_prompt_is_an_error() {
        // The generation prompt differs from the assistant turn's own header.
        let t = template(
            "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[bot]{% endif %}",
        );
        let err = t
            .completion(&[msg("user", "Hi")], &[msg("assistant", "Hello")])
            .unwrap_err();
        assert!(err.contains("cannot be split off"), "{err}");
    }

    #[test]
    fn completions_start_with_an_assistant_message_and_say_something() {
        let t = ChatTemplate::llama3();
        let prompt = [msg("user", "Hi")];
        assert_eq!(t.completion(&prompt, &[]).unwrap_err(), "empty completion");
        assert_eq!(
            t.completion(&prompt, &[msg("assistant", "  ")])
                .unwrap_err(),
            "empty completion"
        );
        assert!(
            t.completion(&prompt, &[msg("user", "x")])
                .unwrap_err()
                .contains("starts with a `user` message")
        );
        assert_eq!(t.prompt(&[]).unwrap_err(), "empty prompt");
    }

    #[test]
    fn generation_tags_render_their_body() {
        assert_eq!(
            without_generation_tags("a{% generation %}b{%- endgeneration -%} c{%x%}{% if y %}"),
            "a{% if true %}b{%- endif -%} c{%x%}{% if y %}"
        );
        let t = template(
            "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}|{% endif %}{% endfor %}",
        );
        assert_eq!(
            t.render(&[msg("user", "Hi"), msg("assistant", "Hello")], false)
                .unwrap(),
            "Hi|Hello"
        );
    }

    #[test]
    fn templates_get_loop_controls_python_methods_and_strftime_now() {
        let t = template(
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content.upper() }}{{ m.content.startswith('h') }}{% endfor %}|{{ strftime_now('%Y') | length }}|{{ {'a': 1}.items() | list | length }}",
        );
        assert_eq!(
            t.render(&[msg("user", "hi"), msg("user", "no")], false)
                .unwrap(),
            "HITrue|4|1"
        );
    }

    #[test]
    fn tojson_writes_what_pythons_json_dumps_writes() {
        let t = template(
            r#"{{ {"a": [1, "x<y"], "b": none, "c": {}} | tojson }}|{{ {"b": 1, "a": [true]} | tojson(indent=2, sort_keys=true) }}|{{ "é\n" | tojson }}|{{ "é" | tojson(ensure_ascii=true) }}"#,
        );
        assert_eq!(
            t.render(&[], false).unwrap(),
            "{\"a\": [1, \"x<y\"], \"b\": null, \"c\": {}}|{\n  \"a\": [\n    true\n  ],\n  \"b\": 1\n}|\"é\\n\"|\"\\u00e9\""
        );
    }
}
