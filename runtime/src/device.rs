//! The one place where the burn backend and device are chosen. Switching poc to another
//! burn backend (e.g. `cuda`, `flex`) means changing the constructors here and the feature
//! in the workspace Cargo.toml.

use burn::tensor::Device;

/// Where tensors live, as the user names it on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// libtorch on the CPU.
    Cpu,
    /// libtorch on CUDA device N.
    Cuda(usize),
}

/// A device string that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, thiserror::Error)]
#[error("unknown device `{0}`: expected `cpu`, `cuda` or `cuda:N`")]
pub struct BadDevice(pub String);

impl std::str::FromStr for DeviceSpec {
    type Err = BadDevice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| BadDevice(s.to_string())),
        }
    }
}

impl DeviceSpec {
    /// The burn device (libtorch backend) for this spec.
    // burn 0.22 marks its tch backend deprecated (0.23 drops it); poc pins 0.22 for libtorch.
    #[allow(deprecated)]
    pub fn device(self) -> Device {
        match self {
            DeviceSpec::Cpu => Device::libtorch(),
            DeviceSpec::Cuda(n) => Device::libtorch_cuda(n),
        }
    }
}

/// The device the policy trains on: `device` with autodiff, and with burn's balanced gradient
/// checkpointing (memory-bound activations recomputed in the backward pass) when asked.
pub fn training(device: &Device, gradient_checkpointing: bool) -> Device {
    let ad = device.clone().autodiff();
    if gradient_checkpointing {
        ad.gradient_checkpointing()
    } else {
        ad
    }
}
