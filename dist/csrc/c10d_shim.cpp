// poc-dist's C++ side: the functions of c10d_shim.h over PyTorch's c10d (TCPStore,
// ProcessGroupGloo and, when compiled in, ProcessGroupNCCL).
//
// Why gloo_decl/: the PyPI torch wheel ships ProcessGroupGloo.hpp but not the Gloo headers
// it includes. Gloo itself is inside libtorch_cpu.so. ProcessGroupGloo holds every Gloo
// object through a pointer (shared_ptr / unique_ptr), so its own layout does not depend on
// Gloo's; gloo_decl/ declares just the names the header mentions so that it parses. The shim
// only calls ProcessGroupGloo's constructor, its static device factories, and the virtual
// members of c10d::Backend, all defined in libtorch; it never touches a Gloo object. This
// holds for torch 2.9.0's header (the version torch-sys checks for); on another torch,
// check that ProcessGroupGloo still holds no Gloo type by value (Device and UnboundBuffer
// stay incomplete here, so those would fail to compile; Context and rendezvous::Store must
// be complete for the header's inline code, so those would not).
//
// Why POC_DIST_NCCL: ProcessGroupNCCL.hpp needs the CUDA toolkit's headers, which the wheel
// does not ship. build.rs defines POC_DIST_NCCL (and USE_C10D_NCCL) only when libtorch has
// libtorch_cuda.so and a CUDA toolkit with nccl.h is found; otherwise "nccl" is refused with
// POC_DIST_UNSUPPORTED. That path compiles and links against the wheel (checked with the
// toolkit headers of PyPI's nvidia-cuda-nvcc and -cccl packages) but has not run on a GPU.

#include "c10d_shim.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef POC_DIST_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct PocDistGroup {
  int rank;
  int world_size;
  std::chrono::milliseconds timeout;
  // Kept alive for the group's lifetime: rank 0's store is the rendezvous server.
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  // The CUDA device an NCCL rank is bound to (barriers need one); empty for Gloo.
  std::optional<at::Device> cuda_device;
};

namespace {

// An error the shim raises itself, with the status it maps to.
struct ShimError : std::exception {
  ShimError(int status, std::string message)
      : status(status), message(std::move(message)) {}
  const char* what() const noexcept override {
    return message.c_str();
  }
  int status;
  std::string message;
};

void copy_message(const std::string& message, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) {
    return;
  }
  const size_t n = std::min(err_len - 1, message.size());
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

// c10d, Gloo and the store all say "timed out" or "timeout" when a deadline passes
// ("wait timeout after 3000ms", "Timed out waiting 3000ms for recv operation", "Operation
// timed out!"); there is no dedicated exception type for it.
bool mentions_timeout(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) {
    return static_cast<char>(std::tolower(c));
  });
  return text.find("timed out") != std::string::npos ||
      text.find("timeout") != std::string::npos;
}

// Runs `body`, turning every exception into a status and a message.
template <typename Body>
int guarded(char* err, size_t err_len, Body&& body) {
  try {
    body();
    return POC_DIST_OK;
  } catch (const ShimError& e) {
    copy_message(e.message, err, err_len);
    return e.status;
  } catch (const c10::Error& e) {
    // what() appends a C++ backtrace when TORCH_SHOW_CPP_STACKTRACES is set; the message
    // alone is what a user needs.
    const std::string message = e.what_without_backtrace();
    copy_message(message, err, err_len);
    return mentions_timeout(message) ? POC_DIST_TIMEOUT : POC_DIST_FAILED;
  } catch (const std::exception& e) {
    const std::string message = e.what();
    copy_message(message, err, err_len);
    return mentions_timeout(message) ? POC_DIST_TIMEOUT : POC_DIST_FAILED;
  } catch (...) {
    copy_message("unknown C++ exception", err, err_len);
    return POC_DIST_FAILED;
  }
}

PocDistGroup& checked(PocDistGroup* group) {
  if (group == nullptr) {
    throw ShimError(POC_DIST_INVALID, "the process group is null");
  }
  return *group;
}

void wait_for(
    const c10::intrusive_ptr<c10d::Work>& work,
    std::chrono::milliseconds timeout) {
  // wait() throws on a timeout or on the backend's error; false means aborted.
  if (!work->wait(timeout)) {
    throw ShimError(POC_DIST_FAILED, "the operation was aborted");
  }
}

c10::intrusive_ptr<c10d::Backend> make_gloo(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world_size,
    std::chrono::milliseconds timeout,
    const char* interface,
    const char* hostname) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (interface != nullptr && interface[0] != '\0') {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (hostname != nullptr && hostname[0] != '\0') {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
  } else {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(
      store, rank, world_size, options);
}

#ifdef POC_DIST_NCCL
// ProcessGroupNCCL::Options is allocated here but built by libtorch, and its layout depends
// on the NCCL version nccl.h declares (NCCL_HAS_CONFIG, ...): refuse an nccl.h of another
// NCCL release than the one libtorch was built against.
void check_nccl_headers() {
  const uint64_t built = torch::cuda::nccl::version(); // major << 32 | minor << 16 | patch
  const uint64_t major = built >> 32;
  const uint64_t minor = (built >> 16) & 0xffff;
  if (major != NCCL_MAJOR || minor != NCCL_MINOR) {
    throw ShimError(
        POC_DIST_UNSUPPORTED,
        "libtorch was built against NCCL " + std::to_string(major) + "." +
            std::to_string(minor) + " but poc-dist was compiled with the nccl.h of NCCL " +
            std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) +
            " (point NCCL_INCLUDE_DIR at the matching headers and rebuild)");
  }
}

// The CUDA device this rank uses: `requested`, or rank modulo the number of devices.
int pick_cuda_device(int rank, int requested) {
  const int visible = c10::cuda::device_count();
  if (visible <= 0) {
    throw ShimError(
        POC_DIST_UNSUPPORTED,
        "the NCCL backend needs a CUDA device and none is visible");
  }
  const int index = requested >= 0 ? requested : rank % visible;
  if (index >= visible) {
    throw ShimError(
        POC_DIST_INVALID,
        "CUDA device " + std::to_string(index) + " does not exist (" +
            std::to_string(visible) + " visible)");
  }
  return index;
}

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world_size,
    std::chrono::milliseconds timeout,
    int device_index,
    std::optional<at::Device>& bound) {
  const auto index = static_cast<c10::DeviceIndex>(device_index);
  c10::cuda::set_device(index);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  // NCCL's watchdog enforces this timeout; wait_for enforces it on the host as well.
  options->timeout = timeout;
  auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
      store, rank, world_size, options);
  const at::Device device(at::kCUDA, index);
  backend->setBoundDeviceId(device);
  bound = device;
  return backend;
}
#endif

// Whether `backend` names NCCL; throws if it names neither backend, or one this build or
// machine cannot run.
bool check_backend(const char* backend) {
  const std::string name = backend;
  const bool nccl = name == "nccl";
  if (!nccl && name != "gloo") {
    throw ShimError(
        POC_DIST_INVALID, "unknown backend \"" + name + "\" (gloo or nccl)");
  }
#ifdef POC_DIST_NCCL
  if (nccl) {
    check_nccl_headers();
  }
#else
  if (nccl) {
    throw ShimError(
        POC_DIST_UNSUPPORTED, "this libtorch has no NCCL (CPU build)");
  }
#endif
  return nccl;
}

// Returns once all `world_size` ranks have reached the store barrier `key`, or throws a
// timeout saying how many had (`reached` words it: "joined"). c10d's own wait for workers (TCPStoreOptions::
// waitWorkers) counts its timeout in whole seconds, so it fires up to a second late.
void store_barrier(
    c10d::Store& store,
    const std::string& key,
    const std::string& reached,
    int world_size,
    std::chrono::milliseconds timeout) {
  const std::string count = "poc_dist/" + key + "/count";
  const std::string done = "poc_dist/" + key + "/done";
  if (store.add(count, 1) >= world_size) {
    store.set(done, std::vector<uint8_t>{1});
  }
  try {
    store.wait({done}, timeout);
  } catch (const c10::Error& e) {
    if (!mentions_timeout(e.what_without_backtrace())) {
      throw;
    }
    const int64_t arrived = store.add(count, 0);
    throw ShimError(
        POC_DIST_TIMEOUT,
        std::to_string(arrived) + " of " + std::to_string(world_size) +
            " ranks " + reached + " within " + std::to_string(timeout.count()) + " ms");
  }
}

std::vector<at::Tensor> borrow(PocDistTensor* const* tensors, size_t count) {
  if (count > 0 && tensors == nullptr) {
    throw ShimError(POC_DIST_INVALID, "the tensor list is null");
  }
  std::vector<at::Tensor> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (tensors[i] == nullptr) {
      throw ShimError(
          POC_DIST_INVALID, "tensor " + std::to_string(i) + " is null");
    }
    // A shallow copy: it shares the caller's TensorImpl, so writes land in its storage.
    const at::Tensor& tensor = *reinterpret_cast<const at::Tensor*>(tensors[i]);
    if (!tensor.defined()) {
      throw ShimError(
          POC_DIST_INVALID, "tensor " + std::to_string(i) + " is undefined");
    }
    if (tensor.layout() != at::kStrided) {
      throw ShimError(
          POC_DIST_INVALID,
          "tensor " + std::to_string(i) + " is not dense (sparse tensors are not supported)");
    }
    out.push_back(tensor);
  }
  return out;
}

// Groups tensors into buckets: same dtype and device, at most `bucket_bytes` bytes each
// (a larger tensor gets a bucket of its own). The plan depends only on the shapes, dtypes
// and order, so every rank computes the same buckets.
std::vector<std::vector<size_t>> plan_buckets(
    const std::vector<at::Tensor>& tensors,
    int64_t bucket_bytes) {
  struct Open {
    at::ScalarType dtype;
    at::Device device;
    std::vector<size_t> members;
    int64_t bytes;
  };
  std::vector<Open> open;
  std::vector<std::vector<size_t>> done;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    auto same = std::find_if(open.begin(), open.end(), [&](const Open& o) {
      return o.dtype == t.scalar_type() && o.device == t.device();
    });
    if (same == open.end()) {
      open.push_back(Open{t.scalar_type(), t.device(), {i}, bytes});
    } else if (same->bytes + bytes <= bucket_bytes) {
      same->members.push_back(i);
      same->bytes += bytes;
    } else {
      done.push_back(std::move(same->members));
      same->members = {i};
      same->bytes = bytes;
    }
  }
  for (auto& o : open) {
    done.push_back(std::move(o.members));
  }
  return done;
}

// One bucket as a flat contiguous tensor. A lone contiguous tensor is used in place;
// otherwise the members are copied into a fresh buffer and `copy_back` writes them back.
struct Flat {
  at::Tensor buffer;
  bool in_place;
};

Flat flatten(const std::vector<at::Tensor>& tensors, const std::vector<size_t>& members) {
  if (members.size() == 1 && tensors[members[0]].is_contiguous()) {
    return Flat{tensors[members[0]].view({-1}), true};
  }
  std::vector<at::Tensor> parts;
  parts.reserve(members.size());
  for (size_t i : members) {
    parts.push_back(tensors[i].reshape({-1}));
  }
  return Flat{at::cat(parts), false};
}

void copy_back(
    const Flat& flat,
    std::vector<at::Tensor>& tensors,
    const std::vector<size_t>& members) {
  if (flat.in_place) {
    return;
  }
  int64_t offset = 0;
  for (size_t i : members) {
    at::Tensor& t = tensors[i];
    const int64_t n = t.numel();
    t.copy_(flat.buffer.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

} // namespace

extern "C" {

int poc_dist_has_nccl(void) {
#ifdef POC_DIST_NCCL
  return 1;
#else
  return 0;
#endif
}

int poc_dist_check_backend(
    const char* backend,
    int rank,
    int cuda_device,
    char* err,
    size_t err_len) {
  return guarded(err, err_len, [&] {
    if (backend == nullptr) {
      throw ShimError(POC_DIST_INVALID, "the backend name is null");
    }
#ifdef POC_DIST_NCCL
    if (check_backend(backend)) {
      pick_cuda_device(rank, cuda_device);
    }
#else
    (void)rank;
    (void)cuda_device;
    check_backend(backend);
#endif
  });
}

int poc_dist_create(
    int rank,
    int world_size,
    const char* master_addr,
    uint16_t master_port,
    int64_t timeout_ms,
    const char* backend,
    const char* gloo_interface,
    const char* gloo_hostname,
    int cuda_device,
    PocDistGroup** out,
    char* err,
    size_t err_len) {
  return guarded(err, err_len, [&] {
    if (out == nullptr || master_addr == nullptr || backend == nullptr) {
      throw ShimError(POC_DIST_INVALID, "a required argument is null");
    }
    *out = nullptr;
    if (world_size < 1 || rank < 0 || rank >= world_size) {
      throw ShimError(
          POC_DIST_INVALID,
          "rank " + std::to_string(rank) + " is not in 0.." +
              std::to_string(world_size));
    }
    if (timeout_ms <= 0) {
      throw ShimError(POC_DIST_INVALID, "the timeout must be positive");
    }
    const bool nccl = check_backend(backend);
#ifdef POC_DIST_NCCL
    const int nccl_device = nccl ? pick_cuda_device(rank, cuda_device) : -1;
#endif
    const std::chrono::milliseconds timeout(timeout_ms);

    c10d::TCPStoreOptions store_options;
    store_options.port = master_port;
    store_options.isServer = rank == 0;
    store_options.numWorkers = static_cast<size_t>(world_size);
    // store_barrier below waits for the workers, to the millisecond.
    store_options.waitWorkers = false;
    store_options.timeout = timeout;
    auto group = std::make_unique<PocDistGroup>();
    group->rank = rank;
    group->world_size = world_size;
    group->timeout = timeout;
    group->store = c10::make_intrusive<c10d::TCPStore>(master_addr, store_options);
    store_barrier(*group->store, "joined", "joined", world_size, timeout);

    if (nccl) {
#ifdef POC_DIST_NCCL
      group->backend = make_nccl(
          group->store, rank, world_size, timeout, nccl_device, group->cuda_device);
#endif
    } else {
      (void)cuda_device;
      group->backend = make_gloo(
          group->store, rank, world_size, timeout, gloo_interface, gloo_hostname);
    }
    // A rank returns only when every rank has its backend.
    store_barrier(
        *group->store, "ready", "built their backend", world_size, timeout);
    *out = group.release();
  });
}

int poc_dist_all_reduce(
    PocDistGroup* group,
    PocDistTensor* const* tensors,
    size_t count,
    int op,
    int64_t bucket_bytes,
    char* err,
    size_t err_len) {
  return guarded(err, err_len, [&] {
    PocDistGroup& g = checked(group);
    if (op != POC_DIST_SUM && op != POC_DIST_AVERAGE) {
      throw ShimError(POC_DIST_INVALID, "unknown reduce op " + std::to_string(op));
    }
    // Parameters are leaves that require grad; writing into them is not a graph op.
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> list = borrow(tensors, count);
    // Check every tensor before communicating, so that every rank rejects the call alike.
    if (op == POC_DIST_AVERAGE) {
      for (size_t i = 0; i < list.size(); ++i) {
        const at::ScalarType dtype = list[i].scalar_type();
        if (!at::isFloatingType(dtype) && !at::isComplexType(dtype)) {
          throw ShimError(
              POC_DIST_INVALID,
              "average needs floating-point tensors; tensor " + std::to_string(i) +
                  " is " + c10::toString(dtype));
        }
      }
    }
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = g.timeout;
    for (const auto& members : plan_buckets(list, bucket_bytes)) {
      Flat flat = flatten(list, members);
      if (flat.buffer.numel() == 0) {
        continue;
      }
      std::vector<at::Tensor> bucket{flat.buffer};
      wait_for(g.backend->allreduce(bucket, options), g.timeout);
      if (op == POC_DIST_AVERAGE) {
        flat.buffer.div_(g.world_size);
      }
      copy_back(flat, list, members);
    }
  });
}

int poc_dist_broadcast(
    PocDistGroup* group,
    PocDistTensor* const* tensors,
    size_t count,
    int root,
    int64_t bucket_bytes,
    char* err,
    size_t err_len) {
  return guarded(err, err_len, [&] {
    PocDistGroup& g = checked(group);
    if (root < 0 || root >= g.world_size) {
      throw ShimError(
          POC_DIST_INVALID,
          "root " + std::to_string(root) + " is not in 0.." +
              std::to_string(g.world_size));
    }
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> list = borrow(tensors, count);
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    options.timeout = g.timeout;
    for (const auto& members : plan_buckets(list, bucket_bytes)) {
      Flat flat = flatten(list, members);
      if (flat.buffer.numel() == 0) {
        continue;
      }
      std::vector<at::Tensor> bucket{flat.buffer};
      wait_for(g.backend->broadcast(bucket, options), g.timeout);
      // The root's own tensors already hold the values.
      if (g.rank != root) {
        copy_back(flat, list, members);
      }
    }
  });
}

int poc_dist_barrier(PocDistGroup* group, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    PocDistGroup& g = checked(group);
    c10d::BarrierOptions options;
    options.timeout = g.timeout;
    if (g.cuda_device.has_value()) {
      options.device_ids = {g.cuda_device->index()};
      options.device = g.cuda_device;
    }
    wait_for(g.backend->barrier(options), g.timeout);
  });
}

int poc_dist_rank(const PocDistGroup* group) {
  return group == nullptr ? -1 : group->rank;
}

int poc_dist_world_size(const PocDistGroup* group) {
  return group == nullptr ? -1 : group->world_size;
}

int poc_dist_destroy(PocDistGroup* group, char* err, size_t err_len) {
  if (group == nullptr) {
    return POC_DIST_OK;
  }
  // shutdown() releases NCCL's communicators (Gloo's is a no-op); the destructors then
  // join Gloo's worker threads and stop rank 0's store server.
  const int status = guarded(err, err_len, [&] { group->backend->shutdown(); });
  delete group;
  return status;
}

} // extern "C"
