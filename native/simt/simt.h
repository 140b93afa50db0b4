// The SIMT emulator: runs the unmodified CUDA kernels of native/cuda/*.cuh on the CPU, in test
// builds only. One fiber per CUDA thread; a hub scheduler on the calling OS thread runs them one
// at a time (lowest runnable thread first), switching at every block barrier and warp collective,
// so missing barriers, divergent barriers, bad shuffle masks and deadlocks become errors instead
// of silent wrong answers. Blocks run one after another (forward, reverse or shuffled order), so
// static __shared__ storage can be ordinary static storage, poisoned (0xFF bytes: NaN) before
// every block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include <vector_types.h>  // CUDA's own dim3 / uint3

namespace simt {

enum class BlockOrder { Forward, Reverse, Shuffle };

struct Options {
  BlockOrder block_order = BlockOrder::Forward;
  uint64_t seed = 1;             // for BlockOrder::Shuffle
  bool reverse_threads = false;  // schedule the highest runnable thread first
  bool poison_shared = true;
};
void set_options(const Options& o);
Options options();

struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, switches = 0;
};
Stats stats();

// Runs kernel(args...) on grid × block threads. Arguments are copied, as CUDA copies them.
// Throws medllava::Error(E_CUDA) with a diagnostic for: an invalid launch configuration, a
// divergent or deadlocked __syncthreads, a warp collective whose mask names an exited or missing
// lane, mismatched masks, shared-memory over-use, and any exception thrown by the kernel.
void launch_thunk(dim3 grid, dim3 block, size_t dynamic_smem, std::function<void()> body);

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t dynamic_smem, Kernel kernel, Args... args) {
  launch_thunk(grid, block, dynamic_smem, [=]() { kernel(args...); });
}

namespace detail {
struct Fiber;
struct LaunchState;
extern thread_local Fiber* t_fiber;
extern thread_local LaunchState* t_launch;
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_shared();
void syncthreads(const char* file, int line);

enum class WarpOp { Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp, Wmma };
// A warp collective. `value` is up to 8 raw bytes; `arg` is the lane/delta/lane-mask operand.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                         int line);
[[noreturn]] void fail(const std::string& message);
}  // namespace detail

}  // namespace simt
