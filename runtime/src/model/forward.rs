//! The decoder's forward pass, written once. [`Llama::hidden`] embeds the new tokens of a
//! batch, runs them through every [`Block::forward`] (one layer's attention and MLP) and the
//! final norm; with a [`KvCache`] the tokens follow the ones cached by earlier calls, which
//! they attend to, and their keys and values join the cache. The training forward, the
//! reference forward and generation all run it; the heads on its hidden states (logits, the
//! reward head, the value head) are [`Llama::logits`], [`Llama::rewards`] and
//! [`Llama::values`].
//!
//! **Padding and positions.** `mask` marks a batch's real tokens. A token attends to the real
//! tokens at or before its column (cached or new), never to padding. A real token's RoPE
//! position is the number of real tokens before it in its row, cached ones included (HF's
//! `cumsum(attention_mask) - 1`): `0..n` in a right-padded row, and a left-padded row (as
//! generation batches its prompts) computes what it would alone.
//!
//! **Families.** What a family changes (norm form, biases, q/k norms, activation, embedding
//! scale, sandwich norms, soft-caps, attention scale, each layer's window and RoPE) is read from
//! the model's [`Arch`]; the code below is the one decoder for all of them. A sliding-window
//! layer masks the keys more than `window − 1` positions before its query (in the fused
//! kernel's mask, and over the KV cache in generation).
//!
//! **Compute dtype.** The residual stream stays f32; each sublayer computes its matrix products
//! in the model's [`Compute`] dtype, its norm statistics in f32; attention is libtorch's fused
//! kernel ([`kernels::attention`]), which accumulates its softmax in f32 (a soft-capped model
//! attends through [`kernels::capped_attention`], the composition with the cap).

use super::arch::{Activation, Arch, NormWeight};
use super::config::{LlamaConfig, Rope, inv_frequencies};
use super::llama::{Block, Compute, Llama, Target};
use crate::kernels;
use burn::tensor::activation::{gelu, relu, sigmoid, silu};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// The keys and values of every layer for the tokens a batch has seen, and which of those
/// tokens are real (not padding).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One slot per layer.
    layers: Vec<LayerCache>,
    /// `[batch][time]`: whether a cached column of a row is a real token.
    mask: Vec<Vec<bool>>,
}

/// One layer's cached keys (after RoPE) and values, each `[batch, kv_heads, time, head_dim]`
/// in the model's compute dtype; empty before the first step.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerCache(Option<(Tensor<4>, Tensor<4>)>);

impl LayerCache {
    /// Appends the new keys and values `[batch, kv_heads, t_new, head_dim]`; returns all of
    /// them, cached ones first.
    fn extend(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.0.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.0 = Some((k.clone(), v.clone()));
        (k, v)
    }
}

impl KvCache {
    /// An empty cache for `batch` rows of `model`.
    pub fn new(model: &Llama, batch: usize) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); model.layers.len()],
            mask: vec![Vec::new(); batch],
        }
    }

    /// The number of rows.
    pub fn batch(&self) -> usize {
        self.mask.len()
    }

    /// The number of cached columns (tokens and padding) per row.
    pub fn len(&self) -> usize {
        self.mask.first().map_or(0, Vec::len)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The RoPE positions of new columns whose real tokens are marked by `mask`
    /// (`[batch][t_new]`): a column's position is the number of real tokens before it in its
    /// row, cached ones included (a padding column gets the position the next real token
    /// will have; it is never attended to).
    pub fn positions(&self, mask: &[Vec<bool>]) -> Vec<Vec<usize>> {
        positions(&self.real_counts(), mask)
    }

    /// The number of real tokens cached in each row.
    fn real_counts(&self) -> Vec<usize> {
        self.mask
            .iter()
            .map(|r| r.iter().filter(|&&m| m).count())
            .collect()
    }

    /// Keeps only the rows `keep` (indices into the current batch, in the order given).
    ///
    /// # Panics
    /// If an index is not a row of the batch.
    pub fn retain(&mut self, keep: &[usize]) {
        if keep.len() == self.batch() && keep.iter().enumerate().all(|(i, &k)| i == k) {
            return;
        }
        self.mask = keep.iter().map(|&r| self.mask[r].clone()).collect();
        let Some(device) = self
            .layers
            .iter()
            .find_map(|l| l.0.as_ref().map(|(k, _)| k.device()))
        else {
            return;
        };
        let idx: Vec<i64> = keep.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [keep.len()]), &device);
        for (k, v) in self.layers.iter_mut().filter_map(|l| l.0.as_mut()) {
            *k = k.clone().select(0, idx.clone());
            *v = v.clone().select(0, idx.clone());
        }
    }
}

/// What every block of one forward pass shares.
pub(crate) struct Pass<'a> {
    /// The model's shapes.
    config: &'a LlamaConfig,
    /// The family's differences.
    arch: &'a Arch,
    /// The dtype of the matrix products.
    compute: Compute,
    /// α / r when the LoRA adapters take part.
    adapter_scale: Option<f64>,
    /// RoPE `(cos, sin)` at the new tokens' positions, `[batch or 1, 1, t_new, head_dim]`, in
    /// the compute dtype, one pair per entry of [`Arch::ropes`].
    ropes: Vec<(Tensor<4>, Tensor<4>)>,
    /// `[batch, 1, t_new, total]`: whether new token i may attend to column j (cached columns,
    /// then the new ones); `None` for a right-padded batch without a cache, where causal
    /// attention is exact for every real token (and padding positions matter to nothing).
    allowed: Option<Tensor<4, Bool>>,
    /// The same for the sliding-window layers, where the window hides some key (`None`: the
    /// window hides nothing here, and `allowed` serves them too).
    windowed: Option<Tensor<4, Bool>>,
}

impl Block {
    /// Layer `index` on the residual stream `x` (`[batch, t_new, hidden]`, f32):
    /// `x + attention(norm(x))`, then `+ mlp(norm(·))` (with a norm of each sublayer's output
    /// before its add in sandwich families). With `cache`, attention also reads the keys and
    /// values cached for earlier tokens, and appends the new ones.
    pub(crate) fn forward(
        &self,
        index: usize,
        x: Tensor<3>,
        pass: &Pass,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let (eps, c, form) = (pass.config.rms_norm_eps, pass.compute, pass.arch.norm);
        let a = c.cast(rms_norm(x.clone(), &self.attn_norm.val(), eps, form));
        let mut a = c.widen(self.attention(index, a, pass, cache));
        if let Some(w) = &self.attn_out_norm {
            a = rms_norm(a, &w.val(), eps, form);
        }
        let x = x + a;
        let m = c.cast(rms_norm(x.clone(), &self.mlp_norm.val(), eps, form));
        let gate = activate(pass.arch.act, self.proj(Target::Gate, m.clone(), pass));
        let up = self.proj(Target::Up, m, pass);
        let mut m = c.widen(self.proj(Target::Down, gate * up, pass));
        if let Some(w) = &self.mlp_out_norm {
            m = rms_norm(m, &w.val(), eps, form);
        }
        x + m
    }

    /// Grouped-query causal self-attention of layer `index` on the normed input `x` (compute
    /// dtype).
    fn attention(
        &self,
        index: usize,
        x: Tensor<3>,
        pass: &Pass,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let (cfg, arch) = (pass.config, pass.arch);
        let layer = arch.layers[index];
        let [b, t, _] = x.dims();
        let (nh, nkv, dh) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let heads =
            |target: Target, n: usize| self.proj(target, x.clone(), pass).reshape([b, t, n, dh]);
        // Per-head norms act on each head's vector before RoPE (Qwen3, Gemma 3).
        let head_norm = |h: Tensor<4>, w: &Option<burn::module::Param<Tensor<1>>>| match w {
            Some(w) => pass.compute.cast(rms_norm(
                pass.compute.widen(h),
                &w.val(),
                cfg.rms_norm_eps,
                arch.norm,
            )),
            None => h,
        };
        let (cos, sin) = &pass.ropes[layer.rope];
        let q = rope(
            head_norm(heads(Target::Q, nh), &self.q_norm).swap_dims(1, 2),
            cos,
            sin,
        );
        let k = rope(
            head_norm(heads(Target::K, nkv), &self.k_norm).swap_dims(1, 2),
            cos,
            sin,
        );
        let v = heads(Target::V, nkv).swap_dims(1, 2);
        let (k, v) = match cache {
            Some(slot) => slot.extend(k, v),
            None => (k, v),
        };
        let allowed = match (layer.window, &pass.windowed) {
            (Some(_), Some(w)) => Some(w),
            _ => pass.allowed.as_ref(),
        };
        let out = match arch.attn_softcap {
            None => kernels::attention(q, k, v, allowed, arch.attn_scale),
            cap => kernels::capped_attention(q, k, v, allowed, arch.attn_scale, cap),
        };
        self.proj(
            Target::O,
            out.swap_dims(1, 2).reshape([b, t, nh * dh]),
            pass,
        )
    }

    /// Projection `t` applied to `x` `[b, n, in]` in the compute dtype, with its bias and, when
    /// the adapters take part, its adapter.
    fn proj(&self, t: Target, x: Tensor<3>, pass: &Pass) -> Tensor<3> {
        let [b, n, i] = x.dims();
        let c = pass.compute;
        let w = c.cast(self.weight(t).val());
        let o = w.dims()[1];
        let x = x.reshape([b * n, i]);
        let mut y = x.clone().matmul(w);
        if let Some(bias) = self.biases.get(t) {
            y = y + c.cast(bias.val()).unsqueeze::<2>();
        }
        if let (Some(scale), Some(ad)) = (pass.adapter_scale, self.adapters.get(t)) {
            let low = x.matmul(c.cast(ad.a.val()));
            y = y + low.matmul(c.cast(ad.b.val())) * scale;
        }
        y.reshape([b, n, o])
    }
}

/// The MLP gate's activation.
fn activate(act: Activation, x: Tensor<3>) -> Tensor<3> {
    match act {
        Activation::Silu => silu(x),
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => {
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), PyTorch's `approximate="tanh"`.
            let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715)
                * (2.0 / std::f64::consts::PI).sqrt();
            x * (inner.tanh() + 1.0) * 0.5
        }
        Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
        Activation::Relu => relu(x),
    }
}

impl Llama {
    /// Logits `[batch, time, vocab]` (f32) for `tokens` `[batch, time]`; `mask`
    /// (`[batch][time]`) marks real tokens (see the module documentation for padding and
    /// positions). Logits at padding positions are meaningless.
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: &[Vec<bool>]) -> Tensor<3> {
        self.logits(self.hidden(tokens, mask, None))
    }

    /// The final hidden states `[batch, t_new, hidden]` (after the last RMSNorm, in the compute
    /// dtype) of `tokens` `[batch, t_new]`, which the heads read. `mask` (`[batch][t_new]`;
    /// a missing entry is padding) marks real tokens. With `cache`, the tokens follow what it
    /// holds, attend to it, and are appended to it; fed in pieces, a batch gets the hidden
    /// states it gets as a whole.
    ///
    /// # Panics
    /// If `mask` or `cache` disagree with `tokens` on the batch size.
    pub fn hidden(
        &self,
        tokens: Tensor<2, Int>,
        mask: &[Vec<bool>],
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, t] = tokens.dims();
        assert!(
            mask.len() == b && cache.as_deref().is_none_or(|c| c.batch() == b),
            "Llama::hidden: tokens [{b}, {t}], a mask of {} rows and a cache of {:?} rows disagree",
            mask.len(),
            cache.as_deref().map(KvCache::batch)
        );
        let mask: Vec<Vec<bool>> = mask
            .iter()
            .map(|r| (0..t).map(|j| r.get(j).copied().unwrap_or(false)).collect())
            .collect();
        let device = tokens.device();
        let seen = cache
            .as_deref()
            .map_or_else(|| vec![0; b], KvCache::real_counts);
        // Where every real token sits at its own column (a right-padded batch, no cache), one
        // table of positions 0..t serves every row (padding positions matter to nothing).
        let mut rows = positions(&seen, &mask);
        let in_place = rows.iter().zip(&mask).all(|(p, m)| {
            p.iter()
                .zip(m)
                .enumerate()
                .all(|(j, (&p, &real))| !real || p == j)
        });
        if in_place {
            rows = vec![(0..t).collect()];
        }
        let ropes = self
            .arch
            .ropes
            .iter()
            .map(|r| {
                let (cos, sin) = rope_tables(&self.config, r, &rows, &device);
                (self.compute.cast(cos), self.compute.cast(sin))
            })
            .collect();
        let plain = cache.is_none() && in_place;
        let columns: &[Vec<bool>] = match cache.as_deref_mut() {
            Some(c) => {
                for (row, new) in c.mask.iter_mut().zip(&mask) {
                    row.extend_from_slice(new);
                }
                &c.mask
            }
            None => &mask,
        };
        let allowed = (!plain).then(|| attention_mask(columns, t, None, &device));
        // One window serves every sliding layer of a model; it needs a mask of its own only
        // where it hides a key (a sequence longer than the window).
        let window = self.arch.layers.iter().find_map(|l| l.window);
        let windowed = window
            .filter(|&w| columns.first().map_or(0, Vec::len) > w)
            .map(|w| attention_mask(columns, t, Some(w), &device));
        let pass = Pass {
            config: &self.config,
            arch: &self.arch,
            compute: self.compute,
            adapter_scale: self.adapter_scale(),
            ropes,
            allowed,
            windowed,
        };
        let h = self.config.hidden_size;
        // The residual stream is f32 whatever the embedding is stored in.
        let mut x = self
            .embed
            .val()
            .select(0, tokens.reshape([b * t]))
            .reshape([b, t, h])
            .cast(burn::tensor::DType::F32);
        if self.arch.embed_scale {
            // Gemma multiplies by √hidden rounded to the embedding's dtype.
            let scale = match self.compute {
                Compute::F32 => (h as f64).sqrt() as f32 as f64,
                Compute::Bf16 => half::bf16::from_f64((h as f64).sqrt()).to_f64(),
            };
            x = x * scale;
        }
        let mut slots = cache.map(|c| c.layers.iter_mut());
        for (index, layer) in self.layers.iter().enumerate() {
            x = layer.forward(index, x, &pass, slots.as_mut().and_then(|s| s.next()));
        }
        let eps = self.config.rms_norm_eps;
        self.compute
            .cast(rms_norm(x, &self.norm.val(), eps, self.arch.norm))
    }

    /// Next-token logits `[batch, time, vocab]` (f32) from final hidden states (soft-capped
    /// where the family caps them).
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let head = self.output_head();
        let [b, t, h] = hidden.dims();
        let v = head.dims()[1];
        let z = self
            .compute
            .widen(hidden.reshape([b * t, h]).matmul(head))
            .reshape([b, t, v]);
        kernels::softcap(z, self.arch.final_softcap)
    }

    /// The output head `[hidden, vocab]` in the compute dtype (the embedding, transposed, when
    /// tied).
    pub fn output_head(&self) -> Tensor<2> {
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed.val().transpose(),
        };
        self.compute.cast(head)
    }

    /// The reward head at every position of `hidden` (`[batch, time, hidden]`): `[batch,
    /// time]`, f32; `None` for a model without one ([`Llama::score`]).
    pub fn rewards(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        let w = self.score.as_ref()?.val();
        Some(self.scalar_head(w, hidden))
    }

    /// The value head at every position of `hidden`: `[batch, time]`, f32; `None` for a model
    /// without one ([`Llama::value_head`]).
    pub fn values(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        let w = self.value_head.as_ref()?.val();
        Some(self.scalar_head(w, hidden))
    }

    /// `hidden · w` for a `[hidden, 1]` head, `[batch, time]`.
    fn scalar_head(&self, w: Tensor<2>, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, h] = hidden.dims();
        self.compute
            .widen(hidden.reshape([b * t, h]).matmul(self.compute.cast(w)))
            .reshape([b, t])
    }
}

/// The RoPE positions of new columns (`mask`, `[batch][t_new]`) after `seen[r]` real tokens
/// of row r: a column's position is the number of real tokens before it.
fn positions(seen: &[usize], mask: &[Vec<bool>]) -> Vec<Vec<usize>> {
    seen.iter()
        .zip(mask)
        .map(|(&seen, new)| {
            let mut next = seen;
            new.iter()
                .map(|&real| {
                    let p = next;
                    next += usize::from(real);
                    p
                })
                .collect()
        })
        .collect()
}

/// The RoPE tables of the shared positions `0..t` made so far on this thread, newest last,
/// keyed by (frequencies, t, device): a training step's forwards reuse them instead of building
/// and uploading them again (an upload after queued work waits for a GPU's queue). The device is
/// keyed by its debug form, which names autodiff and the checkpointing strategy: burn's device
/// equality ignores both, and a tensor of one cannot meet a tensor of another.
type RopeKey = (Vec<u64>, usize, String);
thread_local! {
    static ROPE_CACHE: std::cell::RefCell<Vec<(RopeKey, (Tensor<4>, Tensor<4>))>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How many tables [`ROPE_CACHE`] keeps (a few lengths × each family's RoPE kinds).
const ROPE_CACHE_ENTRIES: usize = 16;

/// RoPE `cos`, `sin` `[rows, 1, t, head_dim]` at `positions` (`[rows][t]`, one row shared by
/// the batch or one per row), in HF's rotate-half layout. The shared table of positions `0..t`
/// is cached ([`ROPE_CACHE`]).
fn rope_tables(
    cfg: &LlamaConfig,
    rope: &Rope,
    positions: &[Vec<usize>],
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let dh = cfg.head_dim();
    let inv = inv_frequencies(rope, dh);
    let shared = positions.len() == 1 && positions[0].iter().enumerate().all(|(j, &p)| p == j);
    if !shared {
        return build_rope_tables(&inv, dh, positions, device);
    }
    let key: RopeKey = (
        inv.iter().map(|f| f.to_bits()).collect(),
        positions[0].len(),
        format!("{device:?}"),
    );
    if let Some(hit) = ROPE_CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, tables)| tables.clone())
    }) {
        return hit;
    }
    let tables = build_rope_tables(&inv, dh, positions, device);
    ROPE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= ROPE_CACHE_ENTRIES {
            c.remove(0);
        }
        c.push((key, tables.clone()));
    });
    tables
}

/// [`rope_tables`] built on the host and uploaded.
fn build_rope_tables(
    inv: &[f64],
    dh: usize,
    positions: &[Vec<usize>],
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let n = positions.len();
    let t = positions.first().map_or(0, Vec::len);
    let mut cos = Vec::with_capacity(n * t * dh);
    let mut sin = Vec::with_capacity(n * t * dh);
    for &pos in positions.iter().flatten() {
        // Both halves of a head share the frequencies (rotate-half layout).
        for _half in 0..2 {
            for f in inv {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
    }
    let make = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [n, 1, t, dh]), device);
    (make(cos), make(sin))
}

/// `[b, 1, t_new, total]` over a mask of every column (`[batch][total]`, the new ones last):
/// new token i (column `total - t_new + i`) may attend to column j when j is not after it, is a
/// real token and, with a `window`, lies among the `window` most recent real tokens (itself
/// included; HF's sliding window counts positions, and a real token's position is the number of
/// real tokens before it).
fn attention_mask(
    mask: &[Vec<bool>],
    t_new: usize,
    window: Option<usize>,
    device: &Device,
) -> Tensor<4, Bool> {
    let b = mask.len();
    let total = mask.first().map_or(t_new, Vec::len);
    let past = total - t_new;
    let mut data = Vec::with_capacity(b * t_new * total);
    for row in mask {
        let pos = positions(&[0], std::slice::from_ref(row)).remove(0);
        for i in 0..t_new {
            let q = past + i;
            data.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, &real)| real && j <= q && window.is_none_or(|w| pos[q] - pos[j] < w)),
            );
        }
    }
    Tensor::<4, Bool>::from_data(TensorData::new(data, [b, 1, t_new, total]), device)
}

/// HF's RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · w`, or `· (1 + w)` for
/// Gemma's form.
fn rms_norm<const D: usize>(
    x: Tensor<D>,
    weight: &Tensor<1>,
    eps: f64,
    form: NormWeight,
) -> Tensor<D> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(D - 1);
    let w = match form {
        NormWeight::Plain => weight.clone(),
        NormWeight::OnePlus => weight.clone() + 1.0,
    };
    x * (ms + eps).sqrt().recip() * w.unsqueeze::<D>()
}

/// `x·cos + rotate_half(x)·sin`, rotate_half(x) = [-x₂, x₁].
fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}
