//! Tokenization against Hugging Face. The fixture's tokenizer.json is built like
//! Meta-Llama-3's (the Llama-3 split regex with look-ahead, byte-level BPE with merges, the
//! Llama-3 special tokens, a BOS post-processor), and expected.json holds what the Python
//! `tokenizers`/`transformers` produce: encodings, the Llama-3 chat template's renderings,
//! and TRL-style prompt/completion token ids (scripts/make_llama_fixture.py).

use poc_runtime::data::chat::{ChatTemplate, Message, parse_messages};
use poc_runtime::data::{Tok, parse_pairs};
use poc_runtime::model::LlamaConfig;
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

fn tok() -> Tok {
    let config = LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    Tok::from_file(&fixture().join("tokenizer.json"), config.eos_ids()[0]).unwrap()
}

#[test]
fn encodings_match_hf_tokenizers() {
    let t = tok();
    assert_eq!(t.bos, Some(306));
    assert_eq!(t.eos, 307);
    assert_eq!(t.pad, 311, "<|finetune_right_pad_id|>");
    for case in expected()["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(t.encode(text, true).unwrap(), want, "{text:?}");
    }
}

fn messages(v: &Value) -> Vec<Message> {
    parse_messages(v.as_array().unwrap(), "test").unwrap()
}

#[test]
fn chat_template_renders_like_transformers() {
    // The fixture has no template of its own, so it gets the built-in (Llama-3) one, which
    // expected.json was rendered with.
    let template = ChatTemplate::from_model_dir(&fixture()).unwrap();
    assert_eq!(template.origin(), None);
    let e = expected();
    let mut checked = 0;
    for (row, chat) in e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(e["chat"].as_array().unwrap())
    {
        if chat.is_null() {
            continue;
        }
        let prompt = messages(&row["prompt"]);
        assert_eq!(
            template.prompt(&prompt).unwrap(),
            chat["prompt"].as_str().unwrap()
        );
        for side in ["chosen", "rejected"] {
            assert_eq!(
                template.completion(&prompt, &messages(&row[side])).unwrap(),
                chat[side].as_str().unwrap(),
                "{side}"
            );
        }
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn rows_tokenize_like_trl() {
    let e = expected();
    let t = tok();
    for (k, (row, want)) in e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(e["tokenized"].as_array().unwrap())
        .enumerate()
    {
        let (pairs, bad) = parse_pairs(&row.to_string(), "row", &t, 512, true).unwrap();
        assert!(bad.is_empty());
        for (side, got) in [
            ("chosen", &pairs[0].chosen),
            ("rejected", &pairs[0].rejected),
        ] {
            let ids: Vec<u32> = serde_json::from_value(want[side]["ids"].clone()).unwrap();
            assert_eq!(got.ids, ids, "row {k} {side}");
            assert_eq!(
                got.completion_start,
                want[side]["completion_start"].as_u64().unwrap() as usize,
                "row {k} {side}"
            );
        }
    }
    // Row 1's prompt ends in a space that merges into the completion's first token: the
    // completion starts at that merged token, as in TRL.
    let row = &e["tokenized"][1]["chosen"];
    let start = row["completion_start"].as_u64().unwrap() as usize;
    let ids: Vec<u32> = serde_json::from_value(row["ids"].clone()).unwrap();
    let prompt_alone = t.encode("The owl is ", true).unwrap();
    assert_eq!(prompt_alone.len(), start + 1);
    assert_ne!(prompt_alone[start], ids[start]);
    assert_eq!(t.decode(&ids[start..start + 1]), " w");
}

#[test]
fn a_bad_tokenizer_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 3}").unwrap();
    let err = Tok::from_file(&path, 0).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("not a usable"),
        "{err}"
    );
    let err = Tok::from_file(&tmp.path().join("absent.json"), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("absent.json"), "{err}");
}
