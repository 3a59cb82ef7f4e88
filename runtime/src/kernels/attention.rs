//! Causal grouped-query attention through libtorch's `scaled_dot_product_attention`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, LibTorch, backend_extension};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, DType, Tensor, TensorData};
use burn_tch::TchTensor;

/// Attention of `q` `[batch, heads, t, head_dim]` over `k`, `v` `[batch, kv_heads, total,
/// head_dim]` (kv_heads divides heads; each key/value head serves `heads / kv_heads` query
/// heads), all in one float dtype, scaled by `scale`. `allowed` (`[batch, 1, t, total]`) says
/// which key each query may attend to; `None` means plain causal attention with `t == total`
/// (query i sees keys 0..=i), which lets libtorch pick its flash kernel. A query that may attend
/// to nothing (a padding position) gets the mean of the values, as a softmax over equal scores
/// would, never NaN. Softmax statistics are accumulated in f32 by the kernel whatever the dtype.
///
/// Differentiable on an autodiff device: the backward pass is libtorch's own for the kernel it
/// chose. This is the attention of every forward pass (training, reference, generation).
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    allowed: Option<&Tensor<4, Bool>>,
    scale: f64,
) -> Tensor<4> {
    let out = match allowed {
        None => <Dispatch as FusedAttention>::sdpa_causal(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            scale,
        ),
        Some(allowed) => {
            let bias = additive_bias(allowed, q.dtype());
            <Dispatch as FusedAttention>::sdpa_biased(
                q.into_dispatch(),
                k.into_dispatch(),
                v.into_dispatch(),
                bias.into_dispatch(),
                scale,
            )
        }
    };
    Tensor::from_dispatch(out)
}

/// `[batch, 1, t, total]`: 0 where attending is allowed, a large negative number elsewhere, in
/// `dtype` (a finite bias, so a query with nothing allowed averages instead of dividing 0 by 0).
fn additive_bias(allowed: &Tensor<4, Bool>, dtype: DType) -> Tensor<4> {
    let dims = allowed.dims();
    Tensor::<4>::zeros(dims, &allowed.device())
        .mask_fill(allowed.clone().bool_not(), -1e9)
        .cast(dtype)
}

/// The composition [`attention`] replaces, kept as its test oracle: repeated key/value heads,
/// `q·kᵀ` scores and their softmax in f32 (`[batch, heads, t, total]`), the weighted sum of
/// values in the inputs' dtype.
pub fn composed_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    allowed: Option<&Tensor<4, Bool>>,
    scale: f64,
) -> Tensor<4> {
    capped_attention(q, k, v, allowed, scale, None)
}

/// [`composed_attention`] with attention-logit soft-capping (Gemma 2): with `Some(c)` the
/// scaled scores become `c·tanh(s/c)` before the mask and the softmax, as transformers' eager
/// attention computes them. libtorch's fused kernels have no soft-cap, so a soft-capped model
/// attends through this composition (burn's autodiff keeps its `[batch, heads, t, total]`
/// scores for the backward pass).
pub fn capped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    allowed: Option<&Tensor<4, Bool>>,
    scale: f64,
    cap: Option<f64>,
) -> Tensor<4> {
    let [b, nh, t, _] = q.dims();
    let (nkv, total) = (k.dims()[1], k.dims()[2]);
    let dtype = q.dtype();
    let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));
    let mut scores = q.matmul(k.swap_dims(2, 3)).cast(DType::F32) * scale;
    if let Some(c) = cap {
        scores = (scores / c).tanh() * c;
    }
    let allowed = match allowed {
        Some(a) => a.clone(),
        None => causal(t, &scores.device()),
    };
    let blocked = allowed.bool_not().expand([b, nh, t, total]);
    softmax(scores.mask_fill(blocked, -1e9), 3)
        .cast(dtype)
        .matmul(v)
}

/// `[1, 1, t, t]`: query i may attend to keys 0..=i.
fn causal(t: usize, device: &burn::tensor::Device) -> Tensor<4, Bool> {
    let data: Vec<bool> = (0..t).flat_map(|i| (0..t).map(move |j| j <= i)).collect();
    Tensor::from_data(TensorData::new(data, [1, 1, t, t]), device)
}

/// `[b, kv, t, d]` → `[b, kv·n, t, d]`, each kv head repeated n times (HF's repeat_kv).
fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n, t, d])
        .reshape([b, kv * n, t, d])
}

/// Fused attention as a burn backend operation (routed by burn's dispatch to libtorch, or to the
/// autodiff wrapper below when the inputs track gradients).
#[backend_extension(LibTorch, Autodiff)]
pub trait FusedAttention: Backend {
    /// Causal attention without a mask (see [`attention`]).
    fn sdpa_causal(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;

    /// Attention with an additive bias `[batch, 1, t, total]` (see [`attention`]).
    fn sdpa_biased(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
}

/// Whether K/V heads must be repeated to the query heads' count before libtorch's kernel, so
/// that a fused kernel (not the math one, which materialises `[batch, heads, t, total]` scores)
/// takes the call. In torch 2.9–2.11 only the flash kernel runs grouped-query attention natively
/// (`enable_gqa`), and flash takes neither a mask nor f32; the memory-efficient kernel takes both
/// but needs equal head counts; the CPU's fused kernel has no `enable_gqa`.
fn repeats_kv(grouped: bool, cuda: bool, masked: bool, half: bool) -> bool {
    grouped && !(cuda && !masked && half)
}

/// libtorch's kernel on tch tensors, grouped-query attention native where a fused kernel runs
/// it ([`repeats_kv`]).
fn sdpa(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
    bias: Option<&tch::Tensor>,
    scale: f64,
) -> tch::Tensor {
    let (nh, nkv) = (q.size()[1], k.size()[1]);
    let causal = bias.is_none();
    let half = matches!(q.kind(), tch::Kind::BFloat16 | tch::Kind::Half);
    if repeats_kv(nh != nkv, q.device().is_cuda(), bias.is_some(), half) {
        let n = nh / nkv;
        let k = k.repeat_interleave_self_int(n, 1, None);
        let v = v.repeat_interleave_self_int(n, 1, None);
        return tch::Tensor::scaled_dot_product_attention(
            q, &k, &v, bias, 0.0, causal, scale, false,
        );
    }
    tch::Tensor::scaled_dot_product_attention(q, k, v, bias, 0.0, causal, scale, nh != nkv)
}

impl FusedAttention for LibTorch {
    fn sdpa_causal(q: TchTensor, k: TchTensor, v: TchTensor, scale: f64) -> TchTensor {
        let _no_grad = tch::no_grad_guard();
        TchTensor::new(sdpa(&q.tensor, &k.tensor, &v.tensor, None, scale))
    }

    fn sdpa_biased(
        q: TchTensor,
        k: TchTensor,
        v: TchTensor,
        bias: TchTensor,
        scale: f64,
    ) -> TchTensor {
        let _no_grad = tch::no_grad_guard();
        TchTensor::new(sdpa(
            &q.tensor,
            &k.tensor,
            &v.tensor,
            Some(&bias.tensor),
            scale,
        ))
    }
}

type AdTensor = FloatTensor<Autodiff<LibTorch>>;

impl<C: CheckpointStrategy> FusedAttention for Autodiff<LibTorch, C> {
    fn sdpa_causal(q: AdTensor, k: AdTensor, v: AdTensor, scale: f64) -> AdTensor {
        tracked::<C>(q, k, v, None, scale)
    }

    fn sdpa_biased(q: AdTensor, k: AdTensor, v: AdTensor, bias: AdTensor, scale: f64) -> AdTensor {
        // The bias is a constant (built from the padding mask): no gradient flows into it.
        tracked::<C>(q, k, v, Some(bias.into_primitive()), scale)
    }
}

/// The backward step of one fused attention: libtorch's autograd graph of the kernel, on
/// leaves that alias the inputs.
#[derive(Debug)]
struct SdpaBackward;

/// What the backward step needs: the kernel's inputs as libtorch leaves that require grad, and
/// its output still attached to libtorch's graph (which saves what the kernel's backward needs,
/// e.g. the log-sum-exp of each query row, not the scores).
#[derive(Debug, Clone)]
struct SdpaState {
    leaves: [TchTensor; 3],
    out: TchTensor,
}

impl Backward<LibTorch, 3> for SdpaBackward {
    type State = SdpaState;

    fn backward(self, ops: Ops<SdpaState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let SdpaState { leaves, out } = ops.state;
        let upstream = grad.tensor.to_kind(out.tensor.kind());
        // d/d(inputs) of Σ out ⊙ upstream is the vector-Jacobian product with `upstream`.
        let input_grads = tch::with_grad(|| {
            let surrogate = (&out.tensor * &upstream).sum(None);
            let inputs: Vec<&tch::Tensor> = leaves.iter().map(|l| &l.tensor).collect();
            tch::Tensor::run_backward(&[surrogate], &inputs, false, false)
        });
        for (parent, g) in ops.parents.iter().zip(input_grads) {
            if let Some(node) = parent {
                grads.register::<LibTorch>(node.id, TchTensor::new(g));
            }
        }
    }
}

/// The autodiff forward: the kernel on detached leaves under libtorch's grad mode when any input
/// tracks gradients, the plain kernel otherwise.
fn tracked<C: CheckpointStrategy>(
    q: AdTensor,
    k: AdTensor,
    v: AdTensor,
    bias: Option<TchTensor>,
    scale: f64,
) -> AdTensor {
    let (q, qn) = q.into_parts();
    let (k, kn) = k.into_parts();
    let (v, vn) = v.into_parts();
    match SdpaBackward
        .prepare::<C>([qn, kn, vn])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            // The leaves share the inputs' storage (and its reference count, so burn never
            // writes into a buffer libtorch's graph still reads).
            let leaf = |t: &TchTensor| {
                TchTensor::from_existing(
                    t.tensor.detach().set_requires_grad(true),
                    t.storage.clone(),
                )
            };
            let leaves = [leaf(&q), leaf(&k), leaf(&v)];
            let out = tch::with_grad(|| {
                sdpa(
                    &leaves[0].tensor,
                    &leaves[1].tensor,
                    &leaves[2].tensor,
                    bias.as_ref().map(|b| &b.tensor),
                    scale,
                )
            });
            let out = TchTensor::new(out);
            // burn sees the output detached from libtorch's graph (its own graph records it),
            // sharing its storage for the same reason as the leaves.
            let visible = TchTensor::from_existing(out.tensor.detach(), out.storage.clone());
            prep.finish(SdpaState { leaves, out }, visible)
        }
        OpsKind::UnTracked(prep) => {
            let out = match bias {
                None => LibTorch::sdpa_causal(q, k, v, scale),
                Some(bias) => LibTorch::sdpa_biased(q, k, v, bias, scale),
            };
            prep.finish(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::repeats_kv;

    #[test]
    fn grouped_heads_are_native_only_where_flash_runs_them() {
        // CUDA, causal (no mask), bf16: flash takes grouped heads as they are.
        assert!(!repeats_kv(true, true, false, true));
        // A mask (left padding, a KV cache) or f32 on CUDA: the memory-efficient kernel, which
        // needs equal head counts; the CPU's fused kernel always does.
        assert!(repeats_kv(true, true, true, true));
        assert!(repeats_kv(true, true, false, false));
        assert!(repeats_kv(true, false, false, true));
        // Equal head counts never repeat.
        assert!(!repeats_kv(false, true, true, false));
        assert!(!repeats_kv(false, false, false, false));
    }
}
