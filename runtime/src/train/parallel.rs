//! Data parallelism on PyTorch's distributed engine (c10d, through `poc-dist`): one process per
//! device, launched by `torchrun` (or `poc run --nproc N`), each holding the whole model.
//!
//! Every rank builds the same global batches from one seeded permutation and trains on its
//! slice of each ([`DataParallel::shard`]); its surrogate is scaled by the *global* batch, so
//! the sum of the ranks' gradients is the gradient of the global mean loss. After backward and
//! before clipping, the gradients of the trainable parameters (the adapters alone under LoRA)
//! are summed by a bucketed all-reduce ([`DataParallel::reduce_grads`]), so every rank clips
//! the same global gradient and takes the same AdamW step. The loss and metric sums of a step
//! are all-reduced too ([`DataParallel::sum`]). Rank 0 broadcasts the starting weights
//! ([`DataParallel::broadcast_model`]) and alone writes checkpoints, metrics and progress.

use crate::data::pairs::batch_of_sides;
use crate::data::{Batch, Pair};
use crate::model::Llama;
use burn::backend::LibTorch;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use poc_dist::{Backend, DistError, Launch, ProcessGroup, ReduceOp};
use std::time::Duration;

/// This process's place in a data-parallel job and the group it talks through.
pub struct DataParallel {
    group: ProcessGroup,
}

/// What the user asked for: the launcher's variables and the collectives' timeout.
#[derive(Debug, Clone)]
pub struct ParallelSpec {
    /// Rank, world size and rank 0's address, as `torchrun` sets them.
    pub launch: Launch,
    /// How long a collective waits for the other ranks before it fails.
    pub timeout: Duration,
}

impl DataParallel {
    /// Joins the group `spec` describes: Gloo for a CPU run, NCCL for CUDA.
    pub fn join(spec: &ParallelSpec, cuda: bool) -> Result<DataParallel, DistError> {
        let backend = if cuda { Backend::Nccl } else { Backend::Gloo };
        let group = ProcessGroup::connect(&spec.launch, spec.timeout, backend)?;
        Ok(DataParallel { group })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// Rows `lo..hi` of `n` that `rank` of `world` trains on: contiguous, sizes differing by at
    /// most one (a short last batch of an epoch may leave a rank none).
    pub fn range(n: usize, rank: usize, world: usize) -> (usize, usize) {
        (n * rank / world, n * (rank + 1) / world)
    }

    /// This rank's slice of the global `batch` (its rows re-padded on their own: a row's
    /// statistics do not depend on the batch around it), or `None` when it has no rows.
    pub fn shard(&self, batch: &Batch, pairs: &[Pair], pad: u32, rejected: bool) -> Option<Batch> {
        let (lo, hi) = Self::range(batch.pairs.len(), self.rank(), self.world_size());
        (hi > lo).then(|| batch_of_sides(pairs, &batch.pairs[lo..hi], pad, rejected))
    }

    /// `values` summed over the ranks, in place (f64, one small all-reduce on the group's
    /// device: NCCL takes CUDA tensors only).
    pub fn sum(&mut self, values: &mut [f64]) -> Result<(), DistError> {
        let device = self.group.device();
        let on_device = tch::Tensor::from_slice(values)
            .f_to_device(device)
            .map_err(|e| DistError::Failed {
                rank: self.rank(),
                op: poc_dist::Operation::AllReduce,
                detail: format!("moving the step's sums to {device:?}: {e}"),
            })?;
        let mut t = [on_device];
        self.group.all_reduce(&mut t, ReduceOp::Sum)?;
        t[0].to_device(tch::Device::Cpu)
            .copy_data(values, values.len());
        Ok(())
    }

    /// The group (tests declare another device on it: [`ProcessGroup::expect_device`]).
    #[doc(hidden)]
    pub fn group_mut(&mut self) -> &mut ProcessGroup {
        &mut self.group
    }

    /// The gradients of `model`'s trainable parameters summed over the ranks (each rank's
    /// already scaled by the global batch). A trainable parameter without a gradient on this
    /// rank (no rows this step) contributes zeros, so every rank reduces the same list.
    pub fn reduce_grads(
        &mut self,
        model: &Llama,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams, DistError> {
        let (mut vectors, mut matrices) = (Vec::new(), Vec::new());
        for p in Trainable::of(model).0 {
            match p.dims {
                1 => vectors.push((p.id, take::<1>(&mut grads, &p))),
                _ => matrices.push((p.id, take::<2>(&mut grads, &p))),
            }
        }
        // Handles on the gradients' own storage: the all-reduce writes into them.
        let mut tensors: Vec<tch::Tensor> = vectors
            .iter()
            .map(|(_, g)| handle(g.clone()))
            .chain(matrices.iter().map(|(_, g)| handle(g.clone())))
            .collect();
        self.group.all_reduce(&mut tensors, ReduceOp::Sum)?;
        for (id, g) in vectors {
            grads.register(id, g);
        }
        for (id, g) in matrices {
            grads.register(id, g);
        }
        Ok(grads)
    }

    /// Every float parameter of `model` overwritten, in place, with rank 0's: all ranks start
    /// from one model whatever each loaded or drew.
    pub fn broadcast_model(&mut self, model: &Llama) -> Result<(), DistError> {
        let mut all = AllParams(Vec::new());
        model.visit(&mut all);
        self.group.broadcast(&mut all.0, 0)
    }
}

/// `p`'s gradient taken out of `grads`, or zeros when this rank has none.
fn take<const D: usize>(grads: &mut GradientsParams, p: &TrainableParam) -> Tensor<D> {
    grads
        .remove::<D>(p.id)
        .unwrap_or_else(|| Tensor::<D>::zeros(p.shape.clone(), &p.device))
}

/// The libtorch tensor under a plain-device burn tensor (a handle on the same storage).
fn handle<const D: usize>(t: Tensor<D>) -> tch::Tensor {
    let inner = t.inner();
    match inner.try_into_primitive::<LibTorch>() {
        Ok(tch_tensor) => tch_tensor.tensor.shallow_clone(),
        Err(e) => unreachable!("poc runs on libtorch alone (device.rs): {e:?}"),
    }
}

/// A trainable parameter: id, rank, shape and device (for zeros when it has no gradient).
struct TrainableParam {
    id: ParamId,
    dims: usize,
    shape: Vec<usize>,
    device: burn::tensor::Device,
}

/// The parameters that require a gradient, in visiting order (the same on every rank).
struct Trainable(Vec<TrainableParam>);

impl Trainable {
    fn of(model: &Llama) -> Trainable {
        let mut t = Trainable(Vec::new());
        model.visit(&mut t);
        t
    }
}

impl ModuleVisitor for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            let value = param.val();
            self.0.push(TrainableParam {
                id: param.id,
                dims: D,
                shape: value.dims().to_vec(),
                device: value.inner().device(),
            });
        }
    }
}

/// Handles on the storage of every float parameter, in visiting order.
struct AllParams(Vec<tch::Tensor>);

impl ModuleVisitor for AllParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(handle(param.val()));
    }
}

#[cfg(test)]
mod tests {
    use super::{DataParallel, ParallelSpec};
    use poc_dist::{DistError, Launch};

    /// A group of one over Gloo on a free local port.
    fn alone() -> DataParallel {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = ParallelSpec {
            launch: Launch {
                rank: 0,
                world_size: 1,
                local_rank: Some(0),
                master_addr: "127.0.0.1".into(),
                master_port: port,
            },
            timeout: std::time::Duration::from_secs(20),
        };
        DataParallel::join(&spec, false).unwrap()
    }

    #[test]
    fn the_step_sums_travel_on_the_groups_device() {
        let mut p = alone();
        let mut v = [1.5, 2.0];
        p.sum(&mut v).unwrap();
        assert_eq!(v, [1.5, 2.0]);
        // A group whose tensors must be on cuda:0 (as NCCL's are): `sum` must send its tensor
        // there (which fails here, without a GPU, while moving it) rather than hand the
        // collective a CPU tensor, which the group refuses by name.
        p.group_mut().expect_device(tch::Device::Cuda(0));
        let err = p.sum(&mut v).unwrap_err();
        assert!(
            !matches!(err, DistError::Invalid { .. }),
            "a CPU tensor reached the collective: {err}"
        );
        // The refusal itself, for a tensor on the wrong device.
        let mut cpu = [tch::Tensor::from_slice(&[1.0f64])];
        let err = p
            .group_mut()
            .all_reduce(&mut cpu, poc_dist::ReduceOp::Sum)
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "tensor 0 of 1 is on cpu, but the gloo group's tensors must be on cuda:0"
            ),
            "{err}"
        );
    }

    #[test]
    fn ranges_cover_the_batch_once_and_differ_by_at_most_one() {
        for n in 0..20 {
            for world in 1..6 {
                let ranges: Vec<(usize, usize)> = (0..world)
                    .map(|r| DataParallel::range(n, r, world))
                    .collect();
                assert_eq!(ranges[0].0, 0);
                assert_eq!(ranges[world - 1].1, n);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].1, w[1].0);
                }
                let sizes: Vec<usize> = ranges.iter().map(|(a, b)| b - a).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} over {world}: {sizes:?}");
            }
        }
    }
}
