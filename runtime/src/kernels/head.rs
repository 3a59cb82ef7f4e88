//! The chunked log-prob head: output projection, log-softmax, the target's log-probability and
//! the entropy of the next-token distribution, a chunk of positions at a time.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, LibTorch, backend_extension};
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor};
use burn_tch::TchTensor;
use tch::Kind;

/// The most logits one chunk holds (positions × vocabulary): 2²⁴ f32 values, 64 MiB per buffer.
/// At Llama-3's vocabulary of 128,256 a chunk is 130 positions; the head's memory (a few such
/// buffers) does not grow with the batch or the sequence length.
pub const HEAD_CHUNK_ELEMENTS: usize = 1 << 24;

/// For each of `n` positions, with final hidden states `hidden` `[n, hidden]` and output head
/// `head` `[hidden, vocab]` (one float dtype, e.g. the compute dtype): the log-probability of
/// `targets[i]` under `softmax(hidden[i] · head)` and that distribution's entropy (nats), both
/// `[n]` in f32. Logits exist for at most [`HEAD_CHUNK_ELEMENTS`] / vocab positions at a time,
/// in the forward pass and in the backward pass (which recomputes them); gradients reach
/// `hidden` and `head` through both outputs.
pub fn token_logps(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
) -> (Tensor<1>, Tensor<1>) {
    let vocab = head.dims()[1];
    let chunk = (HEAD_CHUNK_ELEMENTS / vocab.max(1)).max(1);
    token_logps_in_chunks(hidden, head, targets, chunk)
}

/// [`token_logps`] with `chunk` positions per chunk (≥ 1).
pub fn token_logps_in_chunks(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> (Tensor<1>, Tensor<1>) {
    let n = hidden.dims()[0];
    let out = <Dispatch as ChunkedHead>::chunked_head(
        hidden.into_dispatch(),
        head.into_dispatch(),
        targets.into_dispatch(),
        chunk,
    );
    let out: Tensor<2> = Tensor::from_dispatch(out);
    (
        out.clone().narrow(1, 0, 1).reshape([n]),
        out.narrow(1, 1, 1).reshape([n]),
    )
}

/// The composition [`token_logps`] replaces, kept as its test oracle: the whole `[n, vocab]`
/// logits in f32, their log-softmax, a gather and `-Σ p·log p`.
pub fn composed_token_logps(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
) -> (Tensor<1>, Tensor<1>) {
    capped_token_logps(hidden, head, targets, None)
}

/// [`composed_token_logps`] with final-logit soft-capping (Gemma 2): with `Some(c)` the logits
/// become `c·tanh(z/c)` before the log-softmax. The chunked kernel has no soft-cap, so a
/// soft-capped model scores through this composition, which holds `[n, vocab]` logits.
pub fn capped_token_logps(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
    cap: Option<f64>,
) -> (Tensor<1>, Tensor<1>) {
    let n = hidden.dims()[0];
    let logp = log_softmax(softcap(hidden.matmul(head).cast(DType::F32), cap), 1);
    let tok = logp.clone().gather(1, targets.reshape([n, 1])).reshape([n]);
    let entropy = (logp.clone().exp() * logp).sum_dim(1).reshape([n]).neg();
    (tok, entropy)
}

/// The chunked head as a burn backend operation: `[n, 2]`, log-probs then entropies.
#[backend_extension(LibTorch, Autodiff)]
pub trait ChunkedHead: Backend {
    /// See [`token_logps`]; `chunk` positions at a time.
    fn chunked_head(
        hidden: FloatTensor<Self>,
        head: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;
}

/// Row ranges of at most `chunk` rows covering `0..n`.
fn chunks(n: i64, chunk: usize) -> impl Iterator<Item = (i64, i64)> {
    let c = chunk.max(1) as i64;
    (0..n).step_by(c as usize).map(move |s| (s, c.min(n - s)))
}

/// One chunk's f32 log-softmax `[rows, vocab]`.
fn chunk_log_softmax(h: &tch::Tensor, w: &tch::Tensor) -> tch::Tensor {
    h.matmul(w)
        .to_kind(Kind::Float)
        .log_softmax(-1, Kind::Float)
}

/// The forward pass on tch tensors: `[n, 2]` f32.
fn forward(h: &tch::Tensor, w: &tch::Tensor, targets: &tch::Tensor, chunk: usize) -> tch::Tensor {
    let _no_grad = tch::no_grad_guard();
    let n = h.size()[0];
    let targets = targets.to_kind(Kind::Int64);
    let parts: Vec<tch::Tensor> = chunks(n, chunk)
        .map(|(start, len)| {
            let logp = chunk_log_softmax(&h.narrow(0, start, len), w);
            let tok = logp.gather(1, &targets.narrow(0, start, len).unsqueeze(1), false);
            let entropy = (logp.exp() * &logp)
                .sum_dim_intlist(-1, true, Kind::Float)
                .neg();
            tch::Tensor::cat(&[tok, entropy], 1)
        })
        .collect();
    if parts.is_empty() {
        return tch::Tensor::zeros([0, 2], (Kind::Float, h.device()));
    }
    tch::Tensor::cat(&parts, 0)
}

/// The backward pass on tch tensors: for upstream gradients `grad` `[n, 2]` (of log-probs and
/// entropies), the gradients of `h` and (when `want_w`) of `w`, chunk by chunk with recomputed
/// logits. With `logp = z − lse(z)` and `p = exp(logp)`, `∂logp_t/∂z = onehot(t) − p` and
/// `∂H/∂z = −p ⊙ (logp + H)`.
fn backward(
    h: &tch::Tensor,
    w: &tch::Tensor,
    targets: &tch::Tensor,
    grad: &tch::Tensor,
    chunk: usize,
    want_w: bool,
) -> (tch::Tensor, Option<tch::Tensor>) {
    let _no_grad = tch::no_grad_guard();
    let n = h.size()[0];
    let targets = targets.to_kind(Kind::Int64);
    let grad = grad.to_kind(Kind::Float);
    let mut grad_w = want_w.then(|| tch::Tensor::zeros(w.size(), (Kind::Float, w.device())));
    let mut grad_h = Vec::new();
    for (start, len) in chunks(n, chunk) {
        let hc = h.narrow(0, start, len);
        let logp = chunk_log_softmax(&hc, w);
        let p = logp.exp();
        let entropy = (&p * &logp).sum_dim_intlist(-1, true, Kind::Float).neg();
        let g = grad.narrow(0, start, len);
        let (g_tok, g_ent) = (g.narrow(1, 0, 1), g.narrow(1, 1, 1));
        let mut dz = (&p * (&g_tok + &g_ent * (&logp + &entropy))).neg();
        let _ = dz.scatter_add_(1, &targets.narrow(0, start, len).unsqueeze(1), &g_tok);
        let dz = dz.to_kind(h.kind());
        grad_h.push(dz.matmul(&w.tr()));
        if let Some(gw) = grad_w.as_mut() {
            // Added in place into the f32 accumulator (no f32 copy of the product).
            *gw += hc.tr().matmul(&dz);
        }
    }
    let grad_h = if grad_h.is_empty() {
        h.zeros_like()
    } else {
        tch::Tensor::cat(&grad_h, 0)
    };
    (grad_h, grad_w.map(|g| g.to_kind(w.kind())))
}

impl ChunkedHead for LibTorch {
    fn chunked_head(
        hidden: TchTensor,
        head: TchTensor,
        targets: TchTensor,
        chunk: usize,
    ) -> TchTensor {
        TchTensor::new(forward(
            &hidden.tensor,
            &head.tensor,
            &targets.tensor,
            chunk,
        ))
    }
}

type AdTensor = FloatTensor<Autodiff<LibTorch>>;

/// The head's backward step: recomputes each chunk's logits from the saved inputs.
#[derive(Debug)]
struct HeadBackward;

/// The head's inputs (the hidden states and weight are tensors the graph holds anyway) and the
/// chunk size.
#[derive(Debug, Clone)]
struct HeadState {
    hidden: TchTensor,
    head: TchTensor,
    targets: TchTensor,
    chunk: usize,
}

impl Backward<LibTorch, 2> for HeadBackward {
    type State = HeadState;

    fn backward(self, ops: Ops<HeadState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let s = ops.state;
        let [hidden_node, head_node] = ops.parents;
        let (gh, gw) = backward(
            &s.hidden.tensor,
            &s.head.tensor,
            &s.targets.tensor,
            &grad.tensor,
            s.chunk,
            head_node.is_some(),
        );
        if let Some(node) = hidden_node {
            grads.register::<LibTorch>(node.id, TchTensor::new(gh));
        }
        if let (Some(node), Some(gw)) = (head_node, gw) {
            grads.register::<LibTorch>(node.id, TchTensor::new(gw));
        }
    }
}

impl<C: CheckpointStrategy> ChunkedHead for Autodiff<LibTorch, C> {
    fn chunked_head(
        hidden: AdTensor,
        head: AdTensor,
        targets: TchTensor,
        chunk: usize,
    ) -> AdTensor {
        let (hidden, hn) = hidden.into_parts();
        let (head, wn) = head.into_parts();
        match HeadBackward
            .prepare::<C>([hn, wn])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out =
                    LibTorch::chunked_head(hidden.clone(), head.clone(), targets.clone(), chunk);
                let state = HeadState {
                    hidden,
                    head,
                    targets,
                    chunk,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(LibTorch::chunked_head(hidden, head, targets, chunk))
            }
        }
    }
}

/// `log Σ_v p(v)²` of the next-token distribution `softmax(softcap(hidden · head))` at each position of
/// `hidden` (`[b, n, hidden]` → `[b, n]`, f32): the log collision probability (minus the Rényi
/// entropy of order 2), the normaliser of WPO's weights. No gradient (call it on detached
/// tensors); logits exist for at most [`HEAD_CHUNK_ELEMENTS`] / vocab positions at a time.
pub fn token_collision(hidden: Tensor<3>, head: Tensor<2>, cap: Option<f64>) -> Tensor<2> {
    let [b, n, h] = hidden.dims();
    let rows = b * n;
    let device = hidden.device();
    if rows == 0 {
        return Tensor::<2>::zeros([b, n], &device);
    }
    let vocab = head.dims()[1];
    let chunk = (HEAD_CHUNK_ELEMENTS / vocab.max(1)).max(1);
    let flat = hidden.reshape([rows, h]);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = chunk.min(rows - start);
        let logits = flat.clone().narrow(0, start, len).matmul(head.clone());
        let twice = log_softmax(softcap(logits.cast(DType::F32), cap), 1) * 2.0;
        // log Σ exp(2 log p), shifted by its largest term.
        let top = twice.clone().max_dim(1);
        let lse = (twice - top.clone()).exp().sum_dim(1).log() + top;
        parts.push(lse.reshape([len]));
        start += len;
    }
    Tensor::cat(parts, 0).reshape([b, n])
}

/// `c·tanh(z/c)` with `Some(c)`, `z` itself with `None` (logit soft-capping).
pub fn softcap<const D: usize>(z: Tensor<D>, cap: Option<f64>) -> Tensor<D> {
    match cap {
        Some(c) => (z / c).tanh() * c,
        None => z,
    }
}
