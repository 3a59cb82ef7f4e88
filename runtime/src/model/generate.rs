//! Sampling from the decoder with a KV cache.
//!
//! Decoding runs the one forward pass ([`Llama::hidden`]) with a [`KvCache`]: the prompt once,
//! then only each new token, attending to the keys and values of every earlier one. It is the
//! function the training forward computes (tested to ~1e-5), LoRA adapters and the compute
//! dtype included, because it is the same code.
//!
//! **Variable prompt lengths** are handled by left padding: the prompts of a batch are
//! right-aligned, padding columns are masked out of attention, and a real token's RoPE position
//! is the number of real tokens before it in its row (HF's `cumsum(attention_mask) - 1`), so a
//! row computes what it would alone. (RoPE scores depend only on position differences, so a
//! shifted position would change only the rounding; this keeps even that the row's own.) After
//! the prefill every row appends one token per step. A row that stops (EOS or its length limit)
//! is dropped from the batch and its cache, so a batch costs what its unfinished rows cost.
//!
//! **Sampling** is per row: temperature 0 is greedy (the most likely token, ties to the lowest
//! id); otherwise the logits are divided by the temperature and, with top-p < 1, only the
//! smallest set of most likely tokens whose probability reaches p is kept (nucleus sampling,
//! Holtzman et al. 2019, arXiv 1904.09751). Every prompt has its own random stream
//! (ChaCha8 seeded with the seed, stream = the prompt's index), so a row's samples depend on
//! the seed and its own logits only, not on the batch it shares or on the batch size.

use super::config::LlamaConfig;
pub use super::forward::KvCache;
use super::llama::Llama;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Logits `[batch, t_new, vocab]` for `tokens` `[batch, t_new]` following what `cache` holds,
/// which this appends to: [`Llama::hidden`] with the cache, then the output head. `mask`
/// (`[batch][t_new]`) marks real tokens. With an empty cache this is [`Llama::forward`]; fed
/// in pieces it gives the logits `forward` gives over the whole.
///
/// # Panics
/// If `tokens`, `mask` and `cache` disagree on the batch size.
pub fn forward_step(
    model: &Llama,
    tokens: Tensor<2, Int>,
    mask: &[Vec<bool>],
    cache: &mut KvCache,
) -> Tensor<3> {
    model.logits(model.hidden(tokens, mask, Some(cache)))
}

/// How [`generate`] decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// The most tokens generated per prompt (the stop token included). A row also stops when
    /// prompt + completion reach the model's `max_position_embeddings`.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens until their probability reaches `top_p`
    /// (at least one); 1 keeps the whole vocabulary. Ignored when greedy.
    pub top_p: f64,
    /// Seed of the per-prompt random streams.
    pub seed: u64,
    /// Token ids that end a completion (kept as its last token).
    pub eos: Vec<u32>,
    /// The id written at padding positions (masked out; any id of the vocabulary works).
    pub pad: u32,
    /// Prompts decoded together.
    pub batch_size: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            eos: Vec::new(),
            pad: 0,
            batch_size: 8,
        }
    }
}

/// Why [`generate`] could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    /// A prompt is unusable; `index` is its place in the prompt list.
    #[error("prompt {index}: {message}")]
    BadPrompt {
        /// The prompt's index.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    BadOptions(String),
    /// The logits could not be read back from the device.
    #[error("reading logits from the device: {0}")]
    Read(String),
}

/// Whether `prompt` can be decoded by a model with `config`: not empty, every id in the
/// vocabulary, shorter than the context.
pub fn check_prompt(config: &LlamaConfig, prompt: &[u32]) -> Result<(), String> {
    if prompt.is_empty() {
        return Err("the prompt has no tokens".into());
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= config.vocab_size) {
        return Err(format!(
            "token id {id} is outside the model's vocabulary ({} ids)",
            config.vocab_size
        ));
    }
    if prompt.len() >= config.max_position_embeddings {
        return Err(format!(
            "the prompt is {} tokens, leaving no room to generate in the model's context of {}",
            prompt.len(),
            config.max_position_embeddings
        ));
    }
    Ok(())
}

impl GenerateOptions {
    /// Checks the options that need no model: temperature, top-p, batch size.
    pub fn check_ranges(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "temperature must be a finite number >= 0 (0 is greedy), got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top-p must lie in [0, 1], got {}", self.top_p));
        }
        if self.batch_size == 0 {
            return Err("the batch size must be at least 1".into());
        }
        Ok(())
    }

    /// Checks every option, the token ids against `config`'s vocabulary.
    pub fn check(&self, config: &LlamaConfig) -> Result<(), String> {
        self.check_ranges()?;
        let vocab = config.vocab_size;
        if let Some(id) = self
            .eos
            .iter()
            .chain([&self.pad])
            .find(|&&id| id as usize >= vocab)
        {
            return Err(format!(
                "stop/padding token id {id} is outside the model's vocabulary ({vocab} ids)"
            ));
        }
        Ok(())
    }
}

/// The completion of every prompt (its generated tokens, the stop token included when one
/// ended it), decoding `opts.batch_size` prompts at a time. See the module documentation
/// for padding, positions and sampling.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let mut out = vec![Vec::new(); prompts.len()];
    generate_with(model, prompts, opts, |index, tokens| out[index] = tokens)?;
    Ok(out)
}

/// [`generate`], handing each completion to `done(prompt index, tokens)` as soon as its batch
/// finishes (batches run longest prompts first, so the order is not the prompts' order).
pub fn generate_with(
    model: &Llama,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    mut done: impl FnMut(usize, Vec<u32>),
) -> Result<(), GenerateError> {
    opts.check(&model.config)
        .map_err(GenerateError::BadOptions)?;
    for (index, p) in prompts.iter().enumerate() {
        check_prompt(&model.config, p)
            .map_err(|message| GenerateError::BadPrompt { index, message })?;
    }
    // Longest first: similar lengths share a batch (less padding) and the largest batch runs
    // first, so running out of memory shows at once.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    for rows in order.chunks(opts.batch_size) {
        let batch: Vec<&[u32]> = rows.iter().map(|&i| prompts[i].as_slice()).collect();
        let completions = generate_batch(model, &batch, rows, opts)?;
        for (&index, tokens) in rows.iter().zip(completions) {
            done(index, tokens);
        }
    }
    Ok(())
}

/// One left-padded batch: prefill, then one token per step for the rows still running.
/// `indices` are the prompts' indices (their random streams).
fn generate_batch(
    model: &Llama,
    prompts: &[&[u32]],
    indices: &[usize],
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let b = prompts.len();
    let device = model.embed.val().device();
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut tokens = Vec::with_capacity(b * width);
    let mut mask = Vec::with_capacity(b);
    for p in prompts {
        let pad = width - p.len();
        tokens.extend(std::iter::repeat_n(opts.pad, pad).chain(p.iter().copied()));
        mask.push((0..width).map(|j| j >= pad).collect::<Vec<_>>());
    }
    let limits: Vec<usize> = prompts
        .iter()
        .map(|p| {
            opts.max_new_tokens
                .min(model.config.max_position_embeddings.saturating_sub(p.len()))
        })
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = indices
        .iter()
        .map(|&i| {
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
            rng.set_stream(i as u64);
            rng
        })
        .collect();
    let mut out = vec![Vec::new(); b];
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }
    // The batch rows still decoding, as indices into `prompts`.
    let mut live: Vec<usize> = (0..b).collect();
    let mut cache = KvCache::new(model, b);
    let mut next = ids(&tokens, [b, width], &device);
    loop {
        let hidden = model.hidden(next, &mask, Some(&mut cache));
        let [n, t, h] = hidden.dims();
        let logits = model.logits(hidden.slice([0..n, t - 1..t, 0..h]));
        let v = logits.dims()[2];
        let logits = logits
            .try_into_vec_as::<f32>()
            .map_err(|e| GenerateError::Read(format!("{e:?}")))?;
        let mut picked = Vec::with_capacity(n);
        let mut keep = Vec::with_capacity(n);
        for (slot, &r) in live.iter().enumerate() {
            let row = &logits[slot * v..(slot + 1) * v];
            let token = sample(row, opts.temperature, opts.top_p, &mut rngs[r]);
            out[r].push(token);
            if !opts.eos.contains(&token) && out[r].len() < limits[r] {
                keep.push(slot);
                picked.push(token);
            }
        }
        if keep.is_empty() {
            return Ok(out);
        }
        cache.retain(&keep);
        live = keep.iter().map(|&s| live[s]).collect();
        next = ids(&picked, [live.len(), 1], &device);
        mask = vec![vec![true]; live.len()];
    }
}

fn ids(tokens: &[u32], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    Tensor::<2, Int>::from_data(TensorData::new(data, shape), device)
}

/// The next token from one row of logits: the most likely one (lowest id on ties) when
/// `temperature` is 0, else a draw from the softmax of `logits / temperature` restricted to
/// the nucleus of mass `top_p` (the most likely tokens, at least one, ties by id).
pub fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut impl Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    // NaN logits get no mass; dividing by a positive temperature keeps the order of the
    // logits (distinct f32 values stay distinct in f64), so ties mean equal logits.
    let scaled: Vec<f64> = logits
        .iter()
        .map(|&l| {
            if l.is_nan() {
                f64::NEG_INFINITY
            } else {
                f64::from(l) / temperature
            }
        })
        .collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        // Every logit is -inf or NaN: there is no distribution to draw from.
        return argmax(logits);
    }
    let weight = |i: usize| (scaled[i] - max).exp();
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    if top_p < 1.0 {
        // Most likely first, ties to the lower id (a stable sort keeps id order).
        order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]));
        let total: f64 = order.iter().map(|&i| weight(i)).sum();
        let mut mass = 0.0;
        let mut kept = 0;
        for &i in &order {
            mass += weight(i);
            kept += 1;
            if mass >= top_p * total {
                break;
            }
        }
        order.truncate(kept.max(1));
        // Draw over the nucleus in id order, so that rounding-level changes of the logits
        // (another batch shape) move a draw only at a boundary, not by reordering near-ties.
        order.sort_unstable();
    }
    let total: f64 = order.iter().map(|&i| weight(i)).sum();
    let mut u = rng.random::<f64>() * total;
    for &i in &order {
        u -= weight(i);
        if u < 0.0 {
            return i as u32;
        }
    }
    // Rounding left a sliver of mass: the last token with any weight takes it.
    order
        .iter()
        .rev()
        .find(|&&i| weight(i) > 0.0)
        .map_or(0, |&i| i as u32)
}

/// The index of the largest logit, the lowest on ties (NaN never wins).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() && !l.is_nan() {
            best = i;
        }
    }
    best as u32
}
