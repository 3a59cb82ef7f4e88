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

/// A device the user named that poc cannot use.
#[derive(Debug, thiserror::Error)]
pub enum BadDevice {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device `{0}`: expected `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
    /// A CUDA device libtorch does not see.
    #[error("device `{name}`: {why}")]
    Unavailable {
        /// As the user wrote it.
        name: String,
        /// What libtorch sees instead.
        why: String,
    },
}

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
                .ok_or_else(|| BadDevice::Unknown(s.to_string())),
        }
    }
}

impl DeviceSpec {
    /// The device `name` names, if libtorch can use it: CUDA device N must exist (libtorch
    /// raises deep inside the first tensor operation otherwise).
    pub fn usable(name: &str) -> Result<DeviceSpec, BadDevice> {
        let spec: DeviceSpec = name.parse()?;
        if let DeviceSpec::Cuda(n) = spec {
            let count = tch::Cuda::device_count().max(0) as usize;
            if n >= count {
                let why = if count == 0 {
                    "libtorch sees no CUDA device (no NVIDIA GPU or driver here, or a CPU-only libtorch); use --device cpu".to_string()
                } else {
                    format!(
                        "libtorch sees {count} CUDA device(s): cuda:0 to cuda:{}",
                        count - 1
                    )
                };
                return Err(BadDevice::Unavailable {
                    name: name.to_string(),
                    why,
                });
            }
        }
        Ok(spec)
    }

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

/// Sets libtorch's intra-op CPU threads of this process (for small models one thread is faster
/// than several: their kernels are too short to split).
pub fn set_cpu_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}
