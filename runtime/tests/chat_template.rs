//! The model's own chat template: where a model directory's template comes from (and the
//! built-in Llama-3 one where it has none), clear errors for broken ones, checkpoints that carry
//! it on, and parity with transformers' `apply_chat_template` on Meta's Llama-3.1-8B-Instruct
//! template (scripts/check_chat_template.py).

mod common;

use common::cpu;
use poc_runtime::data::chat::{ChatTemplate, Message, parse_messages};
use poc_runtime::data::{Tok, parse_pairs};
use poc_runtime::model::{LlamaConfig, resolve};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

/// A copy of the tiny-llama fixture (config, weights, tokenizer, no chat template) in a
/// temporary directory, with `tokenizer_config.json` edited by `config` and, when given,
/// `chat_template.jinja`.
fn model_dir(config: impl FnOnce(&mut Value), jinja: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    let text = std::fs::read_to_string(fixture().join("tokenizer_config.json")).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    config(&mut value);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::to_string_pretty(&value).unwrap(),
    )
    .unwrap();
    if let Some(jinja) = jinja {
        std::fs::write(dir.path().join("chat_template.jinja"), jinja).unwrap();
    }
    dir
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

/// `[role] content` per message, `bos_token` first, `eos_token` after assistant turns.
const BRACKETS: &str = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";

#[test]
fn a_model_without_a_template_gets_the_built_in_one() {
    let dir = model_dir(|_| {}, None);
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(template.origin(), None);
    let prompt = [msg("user", "Hi")];
    assert_eq!(
        template.prompt(&prompt).unwrap(),
        ChatTemplate::llama3().prompt(&prompt).unwrap()
    );
    // No tokenizer_config.json at all: the built-in template too.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        ChatTemplate::from_model_dir(empty.path()).unwrap().origin(),
        None
    );
}

#[test]
fn the_template_comes_from_chat_template_jinja_then_tokenizer_config() {
    // A string in tokenizer_config.json, with its special tokens (strings or {"content"}).
    let dir = model_dir(
        |c| {
            c["chat_template"] = json!(BRACKETS);
            c["eos_token"] = json!({"content": "<|eot_id|>", "special": true});
        },
        None,
    );
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(
        template.origin(),
        Some(dir.path().join("tokenizer_config.json").as_path())
    );
    let prompt = [msg("system", "Be brief."), msg("user", "Hi")];
    assert_eq!(
        template.prompt(&prompt).unwrap(),
        "<|begin_of_text|>[system] Be brief.\n[user] Hi\n[assistant] "
    );
    assert_eq!(
        template
            .completion(&prompt, &[msg("assistant", "Hello.")])
            .unwrap(),
        "Hello.<|eot_id|>\n"
    );

    // The list form: the entry named `default`.
    let dir = model_dir(
        |c| {
            c["chat_template"] = json!([
                {"name": "tool_use", "template": "{{ raise_exception('not this one') }}"},
                {"name": "default", "template": BRACKETS},
            ])
        },
        None,
    );
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(
        template.prompt(&[msg("user", "Hi")]).unwrap(),
        "<|begin_of_text|>[user] Hi\n[assistant] "
    );

    // chat_template.jinja takes precedence over tokenizer_config.json's, as in transformers.
    let dir = model_dir(
        |c| c["chat_template"] = json!("{{ raise_exception('not this one') }}"),
        Some("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\n"),
    );
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(
        template.origin(),
        Some(dir.path().join("chat_template.jinja").as_path())
    );
    // (Jinja drops the file's one trailing newline.)
    assert_eq!(
        template.render(&[msg("user", "Hi")], false).unwrap(),
        "<user>Hi"
    );
}

#[test]
fn a_broken_template_is_an_error_naming_its_file() {
    // (keys set in tokenizer_config.json, chat_template.jinja, the file named, why)
    let cases = [
        (
            json!({"chat_template": "{% for m in messages %}{{ m.content }}"}),
            None,
            "tokenizer_config.json",
            "syntax error",
        ),
        (
            json!({}),
            Some("{{ messages | }}"),
            "chat_template.jinja",
            "syntax error",
        ),
        (
            json!({"chat_template": [{"name": "rag", "template": "x"}]}),
            None,
            "tokenizer_config.json",
            "none named `default`",
        ),
        (
            json!({"chat_template": 3}),
            None,
            "tokenizer_config.json",
            "must be a string or a list",
        ),
        (
            json!({"bos_token": 7}),
            None,
            "tokenizer_config.json",
            "`bos_token` must be a string",
        ),
    ];
    for (keys, jinja, file, why) in cases {
        let set = |c: &mut Value| {
            for (k, v) in keys.as_object().unwrap() {
                c[k] = v.clone();
            }
        };
        let dir = model_dir(set, jinja);
        let err = ChatTemplate::from_model_dir(dir.path())
            .err()
            .unwrap()
            .to_string();
        let path = dir.path().join(file).display().to_string();
        assert!(
            err.starts_with(&format!("{path}: not a usable chat template: ")) && err.contains(why),
            "{err}"
        );
    }
    // Invalid JSON in tokenizer_config.json, through --model: an error with a hint, no panic.
    let dir = model_dir(|_| {}, None);
    std::fs::write(dir.path().join("tokenizer_config.json"), "{ not json").unwrap();
    let err = resolve(dir.path().to_str().unwrap(), false, &cpu())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer_config.json: not a usable chat template: invalid JSON")
            && err.contains("= hint: chat rows are rendered with the model's own template"),
        "{err}"
    );
}

#[test]
fn a_resolved_model_renders_rows_with_its_template_and_names_the_row_it_refuses() {
    let template = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";
    let dir = model_dir(|c| c["chat_template"] = json!(template), None);
    let resolved = resolve(dir.path().to_str().unwrap(), false, &cpu()).unwrap();
    let tok = &resolved.tok;
    let rows = [
        r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": [{"role": "assistant", "content": "No."}]}"#,
        r#"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": [{"role": "assistant", "content": "No."}]}"#,
    ]
    .join("\n");
    let (pairs, bad) = parse_pairs(&rows, "chat.jsonl", tok, 256, false).unwrap();
    assert_eq!(pairs.len(), 1);
    let c = &pairs[0].chosen;
    // The template writes no BOS, and none is added (as apply_chat_template(tokenize=True)).
    assert_eq!(
        c.ids,
        tok.encode("[user] Hi\n[assistant] Hello.\n", false)
            .unwrap()
    );
    assert_eq!(tok.decode(&c.ids[c.completion_start..]), "Hello.\n");
    assert_eq!(
        bad,
        [format!(
            "chat.jsonl:2: the chat template of `{}` rejects the conversation: System role not supported",
            dir.path().join("tokenizer_config.json").display()
        )]
    );
}

#[test]
fn a_checkpoints_tokenizer_keeps_the_models_template() {
    let dir = model_dir(
        |c| c["chat_template"] = json!("{{ raise_exception('not this one') }}"),
        Some(BRACKETS),
    );
    let config = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap();
    let tok = Tok::from_file(&dir.path().join("tokenizer.json"), config.eos_ids()[0])
        .unwrap()
        .with_chat_template(ChatTemplate::from_model_dir(dir.path()).unwrap());
    let saved = tempfile::tempdir().unwrap();
    tok.save(saved.path()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        assert!(saved.path().join(f).is_file(), "{f}");
    }
    let again = ChatTemplate::from_model_dir(saved.path()).unwrap();
    assert_eq!(
        again.origin(),
        Some(saved.path().join("chat_template.jinja").as_path())
    );
    let prompt = [msg("user", "Hi")];
    assert_eq!(
        again.prompt(&prompt).unwrap(),
        tok.chat_template().prompt(&prompt).unwrap()
    );
    // The built-in tokenizer has no such files.
    let tiny = tempfile::tempdir().unwrap();
    Tok::tiny().save(tiny.path()).unwrap();
    assert!(!tiny.path().join("chat_template.jinja").exists());
    assert!(!tiny.path().join("tokenizer_config.json").exists());
}

fn messages(v: &Value) -> Vec<Message> {
    parse_messages(v.as_array().unwrap(), "test").unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn chat_rows_tokenize_as_transformers_apply_chat_template_on_llama31s_template() {
    let Some(python) = common::python::python_with(
        "chat rows against transformers' apply_chat_template",
        &["transformers"],
    ) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_chat_template.py");
    let out_dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dirs = v["dirs"].as_array().unwrap();
    assert_eq!(dirs.len(), 2);
    let cases = v["cases"].as_array().unwrap();
    for (dir, file) in dirs
        .iter()
        .zip(["tokenizer_config.json", "chat_template.jinja"])
    {
        let dir = dir.as_str().unwrap();
        // The template is chosen when the model is resolved, as every command resolves it.
        let resolved = resolve(dir, false, &cpu()).unwrap();
        let tok = &resolved.tok;
        let template = tok.chat_template();
        assert_eq!(template.origin(), Some(Path::new(dir).join(file).as_path()));
        for (k, case) in cases.iter().enumerate() {
            let prompt = messages(&case["prompt"]);
            let prompt_text = template.prompt(&prompt).unwrap();
            assert_eq!(
                prompt_text,
                case["prompt_text"].as_str().unwrap(),
                "row {k}"
            );
            let prompt_ids = ids(&case["prompt_ids"]);
            assert_eq!(
                tok.encode(&prompt_text, false).unwrap(),
                prompt_ids,
                "row {k}"
            );

            let row = case["row"].to_string();
            let (pairs, bad) = parse_pairs(&row, "row", tok, 4096, true).unwrap();
            assert!(bad.is_empty(), "{bad:?}");
            let pair = &pairs[0];
            let sides = case["sides"].as_object().unwrap();
            let got = |name: &str| match name {
                "rejected" => &pair.rejected,
                _ => &pair.chosen,
            };
            for (name, want) in sides {
                let side = got(name);
                assert_eq!(side.ids, ids(&want["ids"]), "row {k} {name}");
                assert_eq!(side.completion_start, prompt_ids.len(), "row {k} {name}");
                assert_eq!(
                    template
                        .completion(&prompt, &messages(&want["messages"]))
                        .unwrap(),
                    want["completion_text"].as_str().unwrap(),
                    "row {k} {name}"
                );
            }
            if sides.contains_key("completion") {
                assert!(pair.demonstration && pair.rejected == pair.chosen);
            }
            let earlier: Vec<std::ops::Range<usize>> = case["earlier"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[0].as_u64().unwrap() as usize..r[1].as_u64().unwrap() as usize)
                .collect();
            assert_eq!(pair.chosen.earlier, earlier, "row {k}");
        }
    }
    // Rows with a system message, a multi-turn prompt and a multi-turn demonstration were
    // among them.
    assert!(cases.len() >= 7);
    assert!(!cases[6]["earlier"].as_array().unwrap().is_empty());
}
