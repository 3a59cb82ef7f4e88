//! # poc-dist: a thin binding to PyTorch's c10d
//!
//! Data-parallel training needs three collectives over a group of processes: all-reduce the
//! gradients, broadcast the initial weights, and a barrier. PyTorch's distributed engine
//! (c10d) already implements them, over Gloo (CPU, and CUDA tensors through host copies) and
//! NCCL (CUDA), and it ships inside the libtorch that tch links. This crate binds the few
//! pieces needed, through a small C++ shim (`csrc/c10d_shim.cpp`), so that a poc process and
//! a PyTorch process started by the same launcher speak the same protocol.
//!
//! ## Joining a group
//! [`ProcessGroup::from_env`] reads the variables torchrun sets (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; see [`Launch`]); [`ProcessGroup::new`] takes
//! them as arguments. Rank 0 hosts a c10d `TCPStore` on `MASTER_ADDR:MASTER_PORT`; the others
//! wait for it to listen and connect; every rank then builds its backend, and the constructor
//! returns once all ranks have one. A rank that never shows up makes the others fail with
//! [`DistError::Timeout`] after the group's timeout (or, for ranks other than 0, with
//! [`DistError::Failed`] as soon as rank 0 gives up and takes the store with it).
//!
//! Gloo binds the network interface named by `GLOO_SOCKET_IFNAME` when it is set (as in
//! PyTorch); otherwise the loopback address when `MASTER_ADDR` is a loopback address (a
//! single-machine job), otherwise the address this machine's hostname resolves to.
//!
//! ## Collectives
//! [`ProcessGroup::all_reduce`] ([`ReduceOp::Sum`] or [`ReduceOp::Average`]) and
//! [`ProcessGroup::broadcast`] work in place on a list of tensors, in buckets as PyTorch's
//! DDP does: tensors of one dtype and device are copied into one flat buffer of at most
//! [`ProcessGroup::bucket_bytes`] bytes (25 MiB by default; a larger tensor is a bucket of
//! its own), each bucket is one collective, and the results are copied back. The average is
//! a sum divided by the world size, because Gloo has no native average. Every wait is bounded
//! by the group's timeout.
//!
//! As in c10d, every rank must call the same collectives in the same order, with tensors of
//! the same shapes, dtypes and order. After a [`DistError::Timeout`] or [`DistError::Failed`]
//! the group is in an unknown state: drop it.
//!
//! ## NCCL
//! NCCL lives in `libtorch_cuda.so`, and ProcessGroupNCCL's header needs a CUDA toolkit's
//! headers, which the PyPI wheel does not ship. `build.rs` compiles the NCCL path only when
//! both are found at build time (the toolkit under `CUDA_HOME`, `CUDA_PATH` or
//! `/usr/local/cuda`; `nccl.h` preferably the wheel's own, or `NCCL_INCLUDE_DIR`);
//! `POC_DIST_NCCL=0` compiles it out and `POC_DIST_NCCL=1` makes its absence a build error.
//! Without it [`Backend::Nccl`] is refused with [`DistError::Unavailable`] and the reason
//! ([`Backend::unavailable_reason`]), as it is on a machine without a CUDA device. With NCCL
//! each rank uses CUDA device `LOCAL_RANK` (or `rank % device_count` without one), and the
//! tensors must be on it.
//!
//! ## Gloo's headers
//! The wheel ships `ProcessGroupGloo.hpp` but not the Gloo headers it includes (Gloo itself
//! is inside `libtorch_cpu.so`); `csrc/gloo_decl/` declares the few names that header
//! mentions. ProcessGroupGloo holds Gloo objects only through pointers and the shim calls only
//! what libtorch defines, so nothing depends on Gloo's real layout (see the shim's comment).

#![warn(missing_docs)]

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use tch::Tensor;

/// The bucket size PyTorch's DDP uses by default: 25 MiB.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Where NCCL stands in this build, written by `build.rs`: "compiled in" or why not.
const NCCL_STATUS: &str = env!("POC_DIST_NCCL_STATUS");

/// The communication library a [`ProcessGroup`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Gloo: CPU tensors (CUDA tensors through host copies), TCP between processes.
    Gloo,
    /// NCCL: CUDA tensors, one device per rank. Only in builds that found CUDA (see the
    /// crate documentation).
    Nccl,
}

impl Backend {
    /// The backend's name in c10d (`"gloo"`, `"nccl"`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build can run the backend.
    pub fn is_available(self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// Why this build cannot run the backend, or `None` when it can.
    pub fn unavailable_reason(self) -> Option<&'static str> {
        match self {
            Backend::Gloo => None,
            Backend::Nccl if cfg!(poc_dist_nccl) => None,
            Backend::Nccl => Some(NCCL_STATUS),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How [`ProcessGroup::all_reduce`] combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The elementwise sum over the ranks.
    Sum,
    /// The sum divided by the world size; floating-point (or complex) tensors only.
    Average,
}

/// The operation a [`DistError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Joining the group ([`ProcessGroup::new`], [`ProcessGroup::from_env`]).
    Connect,
    /// [`ProcessGroup::all_reduce`].
    AllReduce,
    /// [`ProcessGroup::broadcast`].
    Broadcast,
    /// [`ProcessGroup::barrier`].
    Barrier,
    /// [`ProcessGroup::shutdown`].
    Shutdown,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Connect => "connect",
            Operation::AllReduce => "all_reduce",
            Operation::Broadcast => "broadcast",
            Operation::Barrier => "barrier",
            Operation::Shutdown => "shutdown",
        })
    }
}

/// What went wrong. Errors after the environment has been read name the rank and the
/// operation: "rank 1: all_reduce timed out after 30 s waiting for the other ranks: …".
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable is not set.
    #[error(
        "environment variable {name} is not set (a launcher such as torchrun sets RANK, \
         WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)"
    )]
    MissingVar {
        /// The variable.
        name: &'static str,
    },
    /// A launcher variable is set to something unusable.
    #[error("environment variable {name}={value:?} is not {expected}")]
    MalformedVar {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: String,
    },
    /// The arguments were rejected before any communication (alike on every rank, so the
    /// group stays usable after one from a collective).
    #[error("rank {rank}: {op}: {message}")]
    Invalid {
        /// The rank reporting.
        rank: usize,
        /// The operation.
        op: Operation,
        /// What was wrong.
        message: String,
    },
    /// The backend is not in this build.
    #[error("rank {rank}: the {backend} backend is not available: {reason}")]
    Unavailable {
        /// The rank reporting.
        rank: usize,
        /// The backend asked for.
        backend: Backend,
        /// Why it is missing.
        reason: String,
    },
    /// The other ranks did not answer within the group's timeout.
    #[error(
        "rank {rank}: {op} timed out after {} waiting for the other ranks: {detail}",
        seconds(*timeout)
    )]
    Timeout {
        /// The rank reporting.
        rank: usize,
        /// The operation.
        op: Operation,
        /// The group's timeout.
        timeout: Duration,
        /// c10d's message.
        detail: String,
    },
    /// c10d, the backend or the store reported an error (a peer closed its connection, …).
    #[error("rank {rank}: {op} failed: {detail}")]
    Failed {
        /// The rank reporting.
        rank: usize,
        /// The operation.
        op: Operation,
        /// c10d's message.
        detail: String,
    },
}

/// "3 s", "2.5 s".
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// Where a process stands in a job, as a launcher describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// The number of processes (`WORLD_SIZE`).
    pub world_size: usize,
    /// The rank on this machine (`LOCAL_RANK`, optional); picks the CUDA device for NCCL.
    pub local_rank: Option<usize>,
    /// The host of rank 0's store (`MASTER_ADDR`).
    pub master_addr: String,
    /// The port of rank 0's store (`MASTER_PORT`).
    pub master_port: u16,
}

impl Launch {
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (optional), `MASTER_ADDR` and `MASTER_PORT`
    /// from the environment.
    pub fn from_env() -> Result<Launch, DistError> {
        Launch::from_vars(|name| match std::env::var(name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(value)) => {
                Some(value.to_string_lossy().into_owned())
            }
        })
    }

    /// Reads the launcher variables through `lookup` (`None`: not set), as
    /// [`Launch::from_env`] does from the environment.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Launch, DistError> {
        let required = |name: &'static str| lookup(name).ok_or(DistError::MissingVar { name });
        let malformed = |name: &'static str, value: &str, expected: &str| DistError::MalformedVar {
            name,
            value: value.to_owned(),
            expected: expected.to_owned(),
        };
        let count = |name: &'static str, value: &str| {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| malformed(name, value, "a non-negative integer"))
        };

        let world = required("WORLD_SIZE")?;
        let world_size = count("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(malformed("WORLD_SIZE", &world, "at least 1"));
        }
        let rank_text = required("RANK")?;
        let rank = count("RANK", &rank_text)?;
        if rank >= world_size {
            return Err(malformed(
                "RANK",
                &rank_text,
                &format!("below WORLD_SIZE ({world_size})"),
            ));
        }
        let local_rank = match lookup("LOCAL_RANK") {
            Some(value) => Some(count("LOCAL_RANK", &value)?),
            None => None,
        };
        let master_addr = required("MASTER_ADDR")?;
        if master_addr.trim().is_empty() {
            return Err(malformed(
                "MASTER_ADDR",
                &master_addr,
                "a host name or address",
            ));
        }
        let port = required("MASTER_PORT")?;
        let master_port = match port.trim().parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(malformed(
                    "MASTER_PORT",
                    &port,
                    "a port number in 1..=65535",
                ));
            }
        };
        Ok(Launch {
            rank,
            world_size,
            local_rank,
            master_addr: master_addr.trim().to_owned(),
            master_port,
        })
    }
}

/// The C ABI of `csrc/c10d_shim.h`.
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    /// `PocDistGroup`, opaque.
    #[repr(C)]
    pub struct Group {
        _opaque: [u8; 0],
    }

    pub const OK: c_int = 0;
    pub const FAILED: c_int = 1;
    pub const TIMEOUT: c_int = 2;
    pub const INVALID: c_int = 3;
    pub const UNSUPPORTED: c_int = 4;

    pub const SUM: c_int = 0;
    pub const AVERAGE: c_int = 1;

    unsafe extern "C" {
        pub fn poc_dist_has_nccl() -> c_int;
        pub fn poc_dist_check_backend(
            backend: *const c_char,
            rank: c_int,
            cuda_device: c_int,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn poc_dist_create(
            rank: c_int,
            world_size: c_int,
            master_addr: *const c_char,
            master_port: u16,
            timeout_ms: i64,
            backend: *const c_char,
            gloo_interface: *const c_char,
            gloo_hostname: *const c_char,
            cuda_device: c_int,
            out: *mut *mut Group,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn poc_dist_all_reduce(
            group: *mut Group,
            tensors: *const *mut c_void,
            count: usize,
            op: c_int,
            bucket_bytes: i64,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn poc_dist_broadcast(
            group: *mut Group,
            tensors: *const *mut c_void,
            count: usize,
            root: c_int,
            bucket_bytes: i64,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn poc_dist_barrier(group: *mut Group, err: *mut c_char, err_len: usize) -> c_int;
        pub fn poc_dist_destroy(group: *mut Group, err: *mut c_char, err_len: usize) -> c_int;
    }
}

/// The room the shim gets for an error message.
const MESSAGE_BYTES: usize = 4096;

/// Whether the shim was compiled with NCCL; [`Backend::is_available`] says the same from the
/// Rust side (a test keeps the two in step).
pub fn shim_has_nccl() -> bool {
    // SAFETY: takes no arguments and touches no state.
    unsafe { ffi::poc_dist_has_nccl() == 1 }
}

/// What the rest of a call needs to turn a shim status into a [`DistError`].
#[derive(Clone, Copy)]
struct Context {
    rank: usize,
    op: Operation,
    timeout: Duration,
    backend: Backend,
}

impl Context {
    fn invalid(self, message: impl Into<String>) -> DistError {
        DistError::Invalid {
            rank: self.rank,
            op: self.op,
            message: message.into(),
        }
    }

    /// Runs one shim call with a message buffer and maps its status.
    fn call(self, body: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), DistError> {
        let mut message = vec![0u8; MESSAGE_BYTES];
        let status = body(message.as_mut_ptr().cast(), message.len());
        if status == ffi::OK {
            return Ok(());
        }
        let end = message
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(message.len());
        let detail = String::from_utf8_lossy(&message[..end]).trim().to_owned();
        let Context {
            rank,
            op,
            timeout,
            backend,
        } = self;
        Err(match status {
            ffi::TIMEOUT => DistError::Timeout {
                rank,
                op,
                timeout,
                detail,
            },
            ffi::INVALID => DistError::Invalid {
                rank,
                op,
                message: detail,
            },
            ffi::UNSUPPORTED => DistError::Unavailable {
                rank,
                backend,
                reason: detail,
            },
            ffi::FAILED => DistError::Failed { rank, op, detail },
            other => DistError::Failed {
                rank,
                op,
                detail: format!("status {other}: {detail}"),
            },
        })
    }
}

/// A c10d process group: this process's membership in a group of `world_size` ranks.
///
/// Dropping it shuts the backend down without talking to the other ranks (use
/// [`ProcessGroup::shutdown`] to see an error). Collectives take `&mut self`: c10d needs them
/// issued in one order, which one owner guarantees.
pub struct ProcessGroup {
    raw: NonNull<ffi::Group>,
    rank: usize,
    world_size: usize,
    backend: Backend,
    timeout: Duration,
    bucket_bytes: usize,
    device: tch::Device,
}

// SAFETY: the shim's group is a heap object with no thread affinity (c10d backends are used
// from any thread); `&mut self` on every collective keeps calls from overlapping.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group described by the launcher's variables ([`Launch::from_env`]). A missing
    /// or malformed variable is an error before any network work.
    pub fn from_env(timeout: Duration, backend: Backend) -> Result<ProcessGroup, DistError> {
        ProcessGroup::connect(&Launch::from_env()?, timeout, backend)
    }

    /// Joins a group of `world_size` ranks as `rank`, meeting at rank 0's store on
    /// `master_addr:master_port`; `timeout` bounds the rendezvous and every later wait.
    pub fn new(
        rank: usize,
        world_size: usize,
        master_addr: &str,
        master_port: u16,
        timeout: Duration,
        backend: Backend,
    ) -> Result<ProcessGroup, DistError> {
        let launch = Launch {
            rank,
            world_size,
            local_rank: None,
            master_addr: master_addr.to_owned(),
            master_port,
        };
        ProcessGroup::connect(&launch, timeout, backend)
    }

    /// Joins the group `launch` describes. Arguments are checked, and an unavailable backend
    /// refused, before any network work. Gloo honours `GLOO_SOCKET_IFNAME`.
    pub fn connect(
        launch: &Launch,
        timeout: Duration,
        backend: Backend,
    ) -> Result<ProcessGroup, DistError> {
        let context = Context {
            rank: launch.rank,
            op: Operation::Connect,
            timeout,
            backend,
        };
        if let Some(reason) = backend.unavailable_reason() {
            return Err(DistError::Unavailable {
                rank: launch.rank,
                backend,
                reason: reason.to_owned(),
            });
        }
        let world = c_int::try_from(launch.world_size).map_err(|_| {
            context.invalid(format!("world size {} is too large", launch.world_size))
        })?;
        if launch.world_size == 0 || launch.rank >= launch.world_size {
            return Err(context.invalid(format!(
                "rank {} is not in 0..{}",
                launch.rank, launch.world_size
            )));
        }
        if timeout.is_zero() {
            return Err(context.invalid("the timeout must be positive"));
        }
        if launch.master_port == 0 {
            return Err(context.invalid("the master port must not be 0"));
        }
        let timeout_ms = i64::try_from(timeout.as_millis().max(1)).unwrap_or(i64::MAX);
        let text = |what: &str, value: &str| {
            CString::new(value).map_err(|_| context.invalid(format!("{what} contains a NUL byte")))
        };
        let master_addr = text("the master address", &launch.master_addr)?;
        let backend_name = text("the backend name", backend.name())?;
        let interface = match std::env::var("GLOO_SOCKET_IFNAME") {
            Ok(name) if !name.is_empty() => Some(text("GLOO_SOCKET_IFNAME", &name)?),
            _ => None,
        };
        let hostname = is_loopback(&launch.master_addr).then(|| master_addr.clone());
        let cuda_device = launch
            .local_rank
            .and_then(|r| c_int::try_from(r).ok())
            .unwrap_or(-1);
        let as_ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());

        context.call(|err, err_len| {
            // SAFETY: `backend_name` outlives the call; `err` has `err_len` writable bytes.
            unsafe {
                ffi::poc_dist_check_backend(
                    backend_name.as_ptr(),
                    launch.rank as c_int,
                    cuda_device,
                    err,
                    err_len,
                )
            }
        })?;
        if launch.rank != 0 {
            wait_for_store(&launch.master_addr, launch.master_port, timeout).map_err(|detail| {
                DistError::Timeout {
                    rank: launch.rank,
                    op: Operation::Connect,
                    timeout,
                    detail,
                }
            })?;
        }

        let mut raw: *mut ffi::Group = std::ptr::null_mut();
        context.call(|err, err_len| {
            // SAFETY: every pointer is valid for the call (the CStrings outlive it), `raw` is
            // a valid out-slot, and `err` has `err_len` writable bytes.
            unsafe {
                ffi::poc_dist_create(
                    launch.rank as c_int,
                    world,
                    master_addr.as_ptr(),
                    launch.master_port,
                    timeout_ms,
                    backend_name.as_ptr(),
                    as_ptr(&interface),
                    as_ptr(&hostname),
                    cuda_device,
                    &mut raw,
                    err,
                    err_len,
                )
            }
        })?;
        let raw = NonNull::new(raw)
            .ok_or_else(|| context.invalid("the shim reported success but returned no group"))?;
        // NCCL reduces CUDA tensors of the rank's own device (LOCAL_RANK's); Gloo, as poc
        // uses it, CPU tensors.
        let device = match backend {
            Backend::Nccl => tch::Device::Cuda(launch.local_rank.unwrap_or(0)),
            Backend::Gloo => tch::Device::Cpu,
        };
        Ok(ProcessGroup {
            raw,
            rank: launch.rank,
            world_size: launch.world_size,
            backend,
            timeout,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            device,
        })
    }

    /// This process's rank, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend the group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The device every tensor handed to a collective must be on: the rank's CUDA device for
    /// NCCL, the CPU for Gloo. A tensor elsewhere is refused before any communication.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// Declares another device for the collectives' tensors. For tests on a machine without
    /// the real one: a Gloo group that expects `cuda:0` shows whether a caller places its
    /// tensors on [`ProcessGroup::device`] or assumes the CPU.
    #[doc(hidden)]
    pub fn expect_device(&mut self, device: tch::Device) {
        self.device = device;
    }

    /// Refuses, alike on every rank, a tensor that is not on the group's device (NCCL would
    /// fail deep inside with "Tensors must be CUDA and dense", Gloo would copy silently).
    fn check_devices(&self, tensors: &[Tensor], op: Operation) -> Result<(), DistError> {
        match tensors.iter().position(|t| t.device() != self.device) {
            Some(i) => Err(self.context(op).invalid(format!(
                "tensor {i} of {} is on {}, but the {} group's tensors must be on {}",
                tensors.len(),
                device_name(tensors[i].device()),
                self.backend,
                device_name(self.device),
            ))),
            None => Ok(()),
        }
    }

    /// The timeout that bounds every wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The most bytes one bucket holds ([`DEFAULT_BUCKET_BYTES`] unless set).
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    /// Sets the bucket size; a tensor larger than it is a bucket of its own. Every rank must
    /// use the same size, since the buckets are matched up across ranks.
    pub fn set_bucket_bytes(&mut self, bytes: usize) {
        self.bucket_bytes = bytes;
    }

    fn context(&self, op: Operation) -> Context {
        Context {
            rank: self.rank,
            op,
            timeout: self.timeout,
            backend: self.backend,
        }
    }

    fn bucket_bytes_arg(&self) -> i64 {
        i64::try_from(self.bucket_bytes).unwrap_or(i64::MAX)
    }

    /// Replaces every tensor, in place, with the elementwise sum (or average) over the ranks.
    /// An average of integer tensors is refused on every rank before any communication.
    pub fn all_reduce(&mut self, tensors: &mut [Tensor], op: ReduceOp) -> Result<(), DistError> {
        self.check_devices(tensors, Operation::AllReduce)?;
        let pointers = tensor_pointers(tensors);
        let op_code = match op {
            ReduceOp::Sum => ffi::SUM,
            ReduceOp::Average => ffi::AVERAGE,
        };
        let raw = self.raw.as_ptr();
        let bucket_bytes = self.bucket_bytes_arg();
        self.context(Operation::AllReduce).call(|err, err_len| {
            // SAFETY: `raw` is the live group; `pointers` holds one valid `torch::Tensor*` per
            // tensor, borrowed mutably for the call; `err` has `err_len` writable bytes.
            unsafe {
                ffi::poc_dist_all_reduce(
                    raw,
                    pointers.as_ptr(),
                    pointers.len(),
                    op_code,
                    bucket_bytes,
                    err,
                    err_len,
                )
            }
        })
    }

    /// Overwrites every tensor, in place, with rank `root`'s.
    pub fn broadcast(&mut self, tensors: &mut [Tensor], root: usize) -> Result<(), DistError> {
        let context = self.context(Operation::Broadcast);
        let root = match c_int::try_from(root) {
            Ok(r) if root < self.world_size => r,
            _ => {
                return Err(
                    context.invalid(format!("root {root} is not in 0..{}", self.world_size))
                );
            }
        };
        self.check_devices(tensors, Operation::Broadcast)?;
        let pointers = tensor_pointers(tensors);
        let raw = self.raw.as_ptr();
        let bucket_bytes = self.bucket_bytes_arg();
        context.call(|err, err_len| {
            // SAFETY: as in `all_reduce`.
            unsafe {
                ffi::poc_dist_broadcast(
                    raw,
                    pointers.as_ptr(),
                    pointers.len(),
                    root,
                    bucket_bytes,
                    err,
                    err_len,
                )
            }
        })
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&mut self) -> Result<(), DistError> {
        let raw = self.raw.as_ptr();
        self.context(Operation::Barrier).call(|err, err_len| {
            // SAFETY: `raw` is the live group; `err` has `err_len` writable bytes.
            unsafe { ffi::poc_dist_barrier(raw, err, err_len) }
        })
    }

    /// Shuts the backend down and frees the group, reporting an error that `Drop` would
    /// swallow. Does not synchronise with the other ranks (call [`ProcessGroup::barrier`]
    /// first for that).
    pub fn shutdown(self) -> Result<(), DistError> {
        let context = self.context(Operation::Shutdown);
        let raw = self.raw.as_ptr();
        std::mem::forget(self);
        context.call(|err, err_len| {
            // SAFETY: `raw` is the live group, destroyed exactly once: `self` was forgotten,
            // so `Drop` will not destroy it again.
            unsafe { ffi::poc_dist_destroy(raw, err, err_len) }
        })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let mut message = [0u8; 256];
        // SAFETY: `raw` is the live group and is destroyed only here (or in `shutdown`,
        // which forgets `self`). The status is dropped: Drop cannot report it.
        unsafe {
            ffi::poc_dist_destroy(
                self.raw.as_ptr(),
                message.as_mut_ptr().cast(),
                message.len(),
            );
        }
    }
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .field("bucket_bytes", &self.bucket_bytes)
            .finish()
    }
}

/// The tensors as the shim takes them: `torch::Tensor*`, one per tensor.
/// `cpu`, `cuda:0`, as torch names devices.
fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn tensor_pointers(tensors: &mut [Tensor]) -> Vec<*mut c_void> {
    tensors
        .iter_mut()
        .map(|t| t.as_mut_ptr().cast::<c_void>())
        .collect()
}

/// Waits, at most `timeout`, until something accepts connections at rank 0's store address.
/// c10d's TCPStore client retries a failed connection once more with a whole new timeout, so
/// without this a missing rank 0 would be reported after twice the timeout or more.
fn wait_for_store(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let host = host.trim_matches(|c| c == '[' || c == ']');
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "nothing accepted a connection at {host}:{port}, where rank 0 hosts the store"
            ));
        }
        // Resolved on every try: a launcher may start ranks before the name resolves.
        let addresses = (host, port)
            .to_socket_addrs()
            .map(Vec::from_iter)
            .unwrap_or_default();
        let attempt = remaining.min(Duration::from_secs(1));
        if addresses
            .iter()
            .any(|a| TcpStream::connect_timeout(a, attempt).is_ok())
        {
            return Ok(());
        }
        std::thread::sleep(remaining.min(Duration::from_millis(50)));
    }
}

/// Whether `host` names this machine's loopback interface (then Gloo binds it too, and a
/// single-machine job never leaves the machine).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.3.2.1",
            "localhost",
            "LOCALHOST",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "node-0", "0.0.0.0", ""] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn timeouts_print_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5 s");
    }
}
