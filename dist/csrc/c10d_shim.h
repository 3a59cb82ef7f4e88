// The C ABI between poc-dist (Rust) and PyTorch's c10d (C++). src/lib.rs declares the same
// functions; keep the two in step.
//
// Every function returns a PocDistStatus. On failure the message is copied, truncated and
// NUL-terminated, into the caller's buffer `err` of `err_len` bytes. No C++ exception ever
// leaves these functions.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// A process group: the rendezvous store plus one c10d backend (Gloo or NCCL).
typedef struct PocDistGroup PocDistGroup;

// A tensor, as tch-rs hands it over: a pointer to a `torch::Tensor` (at::Tensor).
typedef struct PocDistTensor PocDistTensor;

typedef enum PocDistStatus {
  POC_DIST_OK = 0,
  // c10d, Gloo, NCCL or the store reported an error (a peer closed its connection, ...).
  POC_DIST_FAILED = 1,
  // The operation did not complete within the group's timeout.
  POC_DIST_TIMEOUT = 2,
  // The arguments were rejected before any communication (the same on every rank).
  POC_DIST_INVALID = 3,
  // The backend is not compiled into this build (NCCL without CUDA headers or libraries).
  POC_DIST_UNSUPPORTED = 4,
} PocDistStatus;

typedef enum PocDistReduce {
  POC_DIST_SUM = 0,
  // Sum, then divide by the world size (Gloo has no native average).
  POC_DIST_AVERAGE = 1,
} PocDistReduce;

// 1 when the NCCL backend was compiled in, 0 otherwise.
int poc_dist_has_nccl(void);

// Checks, without any network work, that this build and machine can run `backend` as
// `rank` (for NCCL: compiled in, and a CUDA device to use; `cuda_device` as below).
int poc_dist_check_backend(
    const char* backend,
    int rank,
    int cuda_device,
    char* err,
    size_t err_len);

// Joins a group of `world_size` processes: rank 0 hosts a TCPStore on master_addr:master_port
// and waits for the others, the others connect to it, then every rank builds the backend
// ("gloo" or "nccl") and waits until all ranks have theirs. `gloo_interface` (or NULL) names
// the network interface Gloo binds; else `gloo_hostname` (or NULL) names the address it binds;
// else Gloo binds the address this machine's hostname resolves to. `cuda_device` is the CUDA
// device an NCCL rank uses (-1: rank modulo the number of devices). On success *out owns the
// group until poc_dist_destroy.
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
    size_t err_len);

// All-reduces `tensors` in place, in buckets of at most `bucket_bytes` bytes (one tensor of
// one dtype and device per bucket at least). Every rank must pass tensors of the same shapes,
// dtypes and order.
int poc_dist_all_reduce(
    PocDistGroup* group,
    PocDistTensor* const* tensors,
    size_t count,
    int op,
    int64_t bucket_bytes,
    char* err,
    size_t err_len);

// Overwrites `tensors` on every rank with root's, bucketed like poc_dist_all_reduce.
int poc_dist_broadcast(
    PocDistGroup* group,
    PocDistTensor* const* tensors,
    size_t count,
    int root,
    int64_t bucket_bytes,
    char* err,
    size_t err_len);

// Returns once every rank has entered the barrier.
int poc_dist_barrier(PocDistGroup* group, char* err, size_t err_len);

int poc_dist_rank(const PocDistGroup* group);
int poc_dist_world_size(const PocDistGroup* group);

// Shuts the backend down and frees the group, whatever the status; `group` is invalid after
// the call. NULL is a no-op.
int poc_dist_destroy(PocDistGroup* group, char* err, size_t err_len);

#ifdef __cplusplus
} // extern "C"
#endif
