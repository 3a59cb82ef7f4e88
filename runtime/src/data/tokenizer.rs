//! The tokenizer wrapper, and the byte-level tokenizer of the embedded `tiny` model written as
//! a real `tokenizer.json` (byte-level BPE with no merges: one token per byte, plus Llama-3's
//! special tokens), so the demo needs no download and checkpoints load in other tools.

use super::DataError;
use super::chat::ChatTemplate;
use std::path::Path;

/// `<|begin_of_text|>` in the tiny vocabulary.
pub const BOS: u32 = 256;
/// `<|end_of_text|>` in the tiny vocabulary.
pub const EOS: u32 = 257;
/// Padding id in the tiny vocabulary (`<|finetune_right_pad_id|>`).
pub const PAD: u32 = 261;
const SPECIALS: [&str; 6] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
];

/// The tiny model's vocabulary size (256 bytes + specials, rounded up to a multiple of 8).
pub fn tiny_vocab_size() -> usize {
    (256 + SPECIALS.len()).div_ceil(8) * 8
}

/// GPT-2's byte → printable character table used by byte-level BPE.
fn byte_to_char() -> Vec<char> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in printable.into_iter().zip(chars) {
        table[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

/// The tiny tokenizer as `tokenizer.json` text.
pub fn tiny_tokenizer_json() -> String {
    let table = byte_to_char();
    let vocab: serde_json::Map<String, serde_json::Value> = table
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": 256 + i, "content": s, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": SPECIALS[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": SPECIALS[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": SPECIALS[0], "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {SPECIALS[0]: {"id": SPECIALS[0], "ids": [BOS], "tokens": [SPECIALS[0]]}}
        },
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// A loaded tokenizer plus the ids poc needs, and the chat template rows are rendered with.
pub struct Tok {
    inner: tokenizers::Tokenizer,
    chat: ChatTemplate,
    /// End-of-sequence id appended to plain-text completions.
    pub eos: u32,
    /// Padding id: `<|finetune_right_pad_id|>` where the vocabulary has it, else `eos`
    /// (padding is masked out, so any id works).
    pub pad: u32,
    /// `<|begin_of_text|>`, where the vocabulary has it.
    pub bos: Option<u32>,
}

impl Tok {
    /// Reads `tokenizer.json`; `eos` comes from the model config. Its chat template is the
    /// built-in one until [`Tok::with_chat_template`] gives it the model's.
    pub fn from_file(path: &Path, eos: u32) -> Result<Tok, DataError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Tok::new(inner, eos))
    }

    fn new(inner: tokenizers::Tokenizer, eos: u32) -> Tok {
        let pad = inner
            .token_to_id("<|finetune_right_pad_id|>")
            .unwrap_or(eos);
        let bos = inner.token_to_id(SPECIALS[0]);
        Tok {
            inner,
            chat: ChatTemplate::llama3(),
            eos,
            pad,
            bos,
        }
    }

    /// This tokenizer with `chat` as its chat template (the model's own, decided once when the
    /// model is resolved: [`ChatTemplate::from_model_dir`]).
    pub fn with_chat_template(self, chat: ChatTemplate) -> Tok {
        Tok { chat, ..self }
    }

    /// The chat template conversational rows are rendered with.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// The embedded tiny tokenizer.
    pub fn tiny() -> Tok {
        let inner = tiny_tokenizer_json()
            .parse::<tokenizers::Tokenizer>()
            .expect("the embedded tokenizer.json is valid (tested)");
        Tok::new(inner, EOS)
    }

    /// Token ids of `text`, with the tokenizer's special tokens (BOS) when `special`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// The id of the token spelled `text` (e.g. `<|eot_id|>`), if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Writes `tokenizer.json` into `dir`, with the model's `tokenizer_config.json` and
    /// `chat_template.jinja` where it had them (so a checkpoint renders chats as its model did).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        self.inner
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| e.to_string())?;
        self.chat.save(dir)
    }
}
