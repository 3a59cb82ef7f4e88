//! Fused operations that burn's own graph cannot express efficiently, as a burn backend
//! extension on libtorch (the one backend poc runs on, [`crate::device`]):
//!
//! - [`attention`]: causal self-attention by libtorch's `scaled_dot_product_attention`, whose
//!   forward and backward are libtorch's fused kernels (flash / memory-efficient on CUDA, the
//!   flash kernel on CPU). Under burn's autodiff the op keeps libtorch's own small autograd graph
//!   of the kernel (its inputs, output and log-sum-exp: `O(T)` per head) and runs libtorch's
//!   backward on it, instead of burn's composition, which keeps the `[B, H, T, T]` scores.
//! - [`token_logps`]: the output head, log-softmax, the target's log-probability and the
//!   entropy, over a list of positions in chunks, never holding logits for all of them; its
//!   backward recomputes each chunk's logits.
//!
//! Both are `#[backend_extension]` traits implemented for `LibTorch` and for
//! `Autodiff<LibTorch, C>` (the backward passes). The compositions they replace stay as
//! [`composed_attention`] and [`composed_token_logps`], the oracles the tests compare against.

// burn 0.22 marks its tch backend deprecated (0.23 drops it); poc pins 0.22 for libtorch.
#[allow(deprecated)]
mod attention;
#[allow(deprecated)]
mod head;

pub use attention::{attention, capped_attention, composed_attention};
pub use head::{
    HEAD_CHUNK_ELEMENTS, capped_token_logps, composed_token_logps, softcap, token_collision,
    token_logps, token_logps_in_chunks,
};
