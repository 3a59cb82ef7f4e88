//! `--model NAME`: an HF model directory, a Hugging Face Hub id `ORG/NAME[@REVISION]` (its
//! snapshot in the HF cache, downloaded when missing: [`crate::hub`]), or a preset (the embedded
//! `tiny`, or a shape with random weights under `random_init`), with its tokenizer and chat
//! template. Every command that takes a model resolves it here.

use super::{Llama, LlamaConfig, ModelError, load};
use crate::data::chat::ChatTemplate;
use crate::data::{DataError, Tok};
use crate::hub::{self, Hub, HubError, RepoId, RepoKind, Want};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// A resolved model: the weights on the requested device and the tokenizer that goes with them.
pub struct Resolved {
    /// The decoder.
    pub model: Llama,
    /// Its tokenizer (the byte-level one for presets), with the chat template of the model
    /// (the built-in Llama-3 one where it has none).
    pub tok: Tok,
    /// Whether this is the embedded `tiny` default (random init, byte tokenizer).
    pub embedded: bool,
}

/// Why `--model` could not be resolved; each message names the model and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `config.json` or the weights could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The directory has no usable `tokenizer.json`.
    #[error("{0}\n  = hint: an HF model directory needs tokenizer.json beside config.json")]
    Tokenizer(DataError),
    /// The directory's chat template is broken.
    #[error(
        "{0}\n  = hint: chat rows are rendered with the model's own template (chat_template.jinja, else `chat_template` in tokenizer_config.json), as transformers' apply_chat_template does"
    )]
    ChatTemplate(DataError),
    /// A Hub id that could not be resolved from the cache or downloaded.
    #[error("`--model`: {0}")]
    Hub(Box<HubError>),
    /// Neither a directory, a preset name nor a Hub id.
    #[error(
        "`--model {name}` is neither a directory nor a preset, nor a Hub id\n  = hint: presets are {presets}; a directory holds config.json, *.safetensors and tokenizer.json; a Hub id is ORG/NAME[@REVISION]"
    )]
    Unknown {
        /// What was passed.
        name: String,
        /// The preset names, comma-separated.
        presets: String,
    },
    /// A preset other than `tiny` without `random_init`: there are no local weights.
    #[error(
        "the preset `{name}` has no local weights\n  = hint: download the Hugging Face checkpoint (config.json, model*.safetensors, tokenizer.json) into a directory and pass `--model DIR`, or pass `--random-init` to benchmark the shape with random weights"
    )]
    NoLocalWeights {
        /// The preset.
        name: String,
    },
}

impl From<HubError> for ResolveError {
    fn from(e: HubError) -> ResolveError {
        ResolveError::Hub(Box::new(e))
    }
}

// ---- name -> local directory ------------------------------------------------------------

/// The local directory `name` stands for: an existing directory as it is; a Hub id
/// (`ORG/NAME[@REVISION]`) as its snapshot in the Hugging Face cache, holding what `want` asks
/// for (missing files downloaded, unless `HF_HUB_OFFLINE` is set); `None` for anything else (a
/// preset name, or an unknown one).
pub fn local_dir(name: &str, want: Want) -> Result<Option<PathBuf>, ResolveError> {
    let path = Path::new(name);
    if path.is_dir() {
        return Ok(Some(path.to_path_buf()));
    }
    if LlamaConfig::preset(name).is_some() {
        return Ok(None);
    }
    match RepoId::parse(name, RepoKind::Model) {
        Some(id) => Ok(Some(hub::model(&Hub::from_env(), &id, want)?)),
        None => Ok(None),
    }
}

// ---- directory or preset -> model -------------------------------------------------------

/// The configuration `name` stands for (a directory's or a Hub snapshot's `config.json`, or a
/// preset's), without loading any weights: what the memory plan reads.
pub fn config(name: &str) -> Result<LlamaConfig, ResolveError> {
    if let Some(dir) = local_dir(name, Want::Config)? {
        return Ok(LlamaConfig::from_file(&dir.join("config.json"))?);
    }
    LlamaConfig::preset(name).ok_or_else(|| ResolveError::Unknown {
        name: name.to_string(),
        presets: LlamaConfig::PRESETS.join(", "),
    })
}

/// Whether [`resolve`] would find weights for `name` (a directory, a Hub id, the embedded
/// `tiny`, or a preset with `random_init`), without loading anything: its errors, early.
pub fn available(name: &str, random_init: bool) -> Result<(), ResolveError> {
    config(name)?;
    if Path::new(name).is_dir()
        || LlamaConfig::preset(name).is_none()
        || name == "tiny"
        || random_init
    {
        Ok(())
    } else {
        Err(ResolveError::NoLocalWeights {
            name: name.to_string(),
        })
    }
}

/// The seed of every random initialization a model name stands for ([`resolve`]).
pub const INIT_SEED: u64 = 0;

/// Resolves `name` on `device`. `random_init` replaces a directory's or a preset's weights
/// with random ones (the embedded `tiny` is always random). Random weights are a function of
/// the name alone (drawn from [`INIT_SEED`]), so `--model tiny` is the same model for every
/// command; a run's `--seed` orders its data and seeds what it adds (LoRA adapters, heads).
pub fn resolve(name: &str, random_init: bool, device: &Device) -> Result<Resolved, ResolveError> {
    resolve_stored(name, random_init, device, None)
}

/// [`resolve`] with the model's matrices stored in `matrices` from the start (a LoRA base in
/// bf16: [`Llama::random_stored`], [`load::load_stored`]).
pub fn resolve_stored(
    name: &str,
    random_init: bool,
    device: &Device,
    matrices: Option<burn::tensor::DType>,
) -> Result<Resolved, ResolveError> {
    if let Some(dir) = local_dir(name, Want::Everything)? {
        let path = dir.as_path();
        let config = LlamaConfig::from_file(&path.join("config.json"))?;
        let eos = config.eos_ids().first().copied().unwrap_or(0);
        let chat = ChatTemplate::from_model_dir(path).map_err(ResolveError::ChatTemplate)?;
        let tok = Tok::from_file(&path.join("tokenizer.json"), eos)
            .map_err(ResolveError::Tokenizer)?
            .with_chat_template(chat);
        let model = if random_init {
            Llama::random_stored(&config, INIT_SEED, device, matrices)
        } else {
            load::load_stored(path, device, matrices)?
        };
        return Ok(Resolved {
            model,
            tok,
            embedded: false,
        });
    }
    let Some(config) = LlamaConfig::preset(name) else {
        return Err(ResolveError::Unknown {
            name: name.to_string(),
            presets: LlamaConfig::PRESETS.join(", "),
        });
    };
    if name == "tiny" {
        let model = Llama::random_stored(&config, INIT_SEED, device, matrices);
        return Ok(Resolved {
            model,
            tok: Tok::tiny(),
            embedded: true,
        });
    }
    if !random_init {
        return Err(ResolveError::NoLocalWeights {
            name: name.to_string(),
        });
    }
    let model = Llama::random_stored(&config, INIT_SEED, device, matrices);
    Ok(Resolved {
        model,
        tok: Tok::tiny(),
        embedded: false,
    })
}
