// SIMT emulator core: fibers, the hub scheduler, barriers, warp collectives, shared memory.
//
// Switching uses _setjmp/_longjmp through a hub (~100 ns a switch; swapcontext costs ~1 µs because
// it saves the signal mask); a fiber's first entry onto its fresh stack uses makecontext/setcontext.
// _FORTIFY_SOURCE must be off here: glibc's __longjmp_chk aborts a longjmp between stacks.
#undef _FORTIFY_SOURCE
#include "simt.h"

#include <dlfcn.h>
#include <elf.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <vector>

#include "../core/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif
#ifdef SIMT_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace simt {
namespace detail {

namespace {
#ifdef SIMT_ASAN
constexpr size_t kStackSize = 512 * 1024;  // ASan's redzones need room
#else
constexpr size_t kStackSize = 64 * 1024;
#endif
constexpr size_t kMaxThreads = 1024;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // sm_90 opt-in maximum
}  // namespace

enum class State { Runnable, AtBarrier, AtWarp, Exited };

struct Fiber {
  jmp_buf jb;
  ucontext_t uc;
  char* stack_lo = nullptr;  // usable stack, above the guard page
  bool started = false;
  State state = State::Runnable;
  uint3 thread_idx{0, 0, 0};
  int linear = 0, warp = 0, lane = 0;
  const char* site_file = nullptr;
  int site_line = 0;
  // warp collective in flight
  uint64_t warp_in = 0, warp_out = 0;
  int warp_arg = 0;
#ifdef SIMT_ASAN
  void* fake_stack = nullptr;
#endif
};

struct WarpState {
  int size = 0;             // lanes that exist (the last warp of a block may be partial)
  unsigned exited = 0;      // lanes that have returned
  unsigned pending = 0;     // mask of the collective in flight (0: none)
  unsigned arrived = 0;
  WarpOp op = WarpOp::SyncWarp;
  int width = 32;
  const char* file = nullptr;
  int line = 0;
};

struct LaunchState {
  dim3 grid, block;
  uint3 block_idx{0, 0, 0};
  std::function<void()> body;
  std::vector<Fiber>* fibers = nullptr;
  std::vector<WarpState> warps;
  int threads = 0, live = 0, at_barrier = 0;
  jmp_buf hub_jb;
  std::string error;
  unsigned char* dyn_smem = nullptr;
  size_t dyn_smem_size = 0;
#ifdef SIMT_ASAN
  void* hub_fake_stack = nullptr;
  const void* hub_stack_bottom = nullptr;
  size_t hub_stack_size = 0;
#endif
};

struct FiberFailure {
  std::string message;
};

thread_local Fiber* t_fiber = nullptr;
thread_local LaunchState* t_launch = nullptr;

namespace {
std::mutex g_launch_mutex;  // static __shared__ storage is process-global: one launch at a time
Options g_options;
Stats g_stats;

struct StackPool {
  std::vector<char*> stacks;  // mapping base (guard page first)
  size_t page = 4096;
  StackPool() { page = (size_t)sysconf(_SC_PAGESIZE); }
  ~StackPool() {
    for (char* s : stacks) munmap(s, kStackSize + page);
  }
  char* get(size_t i) {
    while (stacks.size() <= i) {
      void* p = mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) throw medllava::Error(medllava::ErrorCode::OOM, "simt: cannot map a fiber stack");
      mprotect(p, page, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
      stacks.push_back(static_cast<char*>(p));
    }
    return stacks[i] + page;
  }
};
StackPool& stack_pool() {
  static StackPool pool;
  return pool;
}

// ---- static __shared__ variables ------------------------------------------------------------
// Kernels live in namespace medllava::cuda, so their static locals (== __shared__ arrays under
// the emulator) are the symbols named _ZZN8medllava4cuda…. We find them in our own ELF symbol
// table (GCC ignores section attributes on statics of template functions, so a linker section
// cannot collect them) and poison them before every block.
struct Region {
  unsigned char* addr;
  size_t size;
};

std::vector<Region> find_shared_statics(std::string& problem) {
  std::vector<Region> out;
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&find_shared_statics), &info) || !info.dli_fname) {
    problem = "dladdr failed";
    return out;
  }
  std::ifstream in(info.dli_fname, std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (file.size() < sizeof(Elf64_Ehdr)) {
    problem = std::string("cannot read ") + info.dli_fname;
    return out;
  }
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(file.data());
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > file.size()) {
    problem = "not a 64-bit ELF file";
    return out;
  }
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(file.data() + eh->e_shoff);
  const uintptr_t base = eh->e_type == ET_DYN ? reinterpret_cast<uintptr_t>(info.dli_fbase) : 0;
  bool have_symtab = false;
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr& strtab = sh[sh[i].sh_link];
    if (sh[i].sh_offset + sh[i].sh_size > file.size() || strtab.sh_offset + strtab.sh_size > file.size()) continue;
    have_symtab = true;
    const auto* syms = reinterpret_cast<const Elf64_Sym*>(file.data() + sh[i].sh_offset);
    const size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
    static const char kPrefix[] = "_ZZN8medllava4cuda";
    for (size_t s = 0; s < count; ++s) {
      if (ELF64_ST_TYPE(syms[s].st_info) != STT_OBJECT || syms[s].st_size == 0) continue;
      if (syms[s].st_name >= strtab.sh_size) continue;
      const char* name = file.data() + strtab.sh_offset + syms[s].st_name;
      if (std::strncmp(name, kPrefix, sizeof(kPrefix) - 1) != 0) continue;
      out.push_back({reinterpret_cast<unsigned char*>(base + syms[s].st_value), (size_t)syms[s].st_size});
    }
  }
  if (!have_symtab) problem = std::string("no symbol table in ") + info.dli_fname + " (stripped?)";
  return out;
}

const std::vector<Region>& shared_statics() {
  static std::string problem;
  static const std::vector<Region> regions = find_shared_statics(problem);
  if (!problem.empty())
    throw medllava::Error(medllava::ErrorCode::Cuda, "simt: cannot locate static __shared__ variables: " + problem);
  return regions;
}

std::string where(const Fiber& f) {
  std::ostringstream s;
  s << "thread (" << f.thread_idx.x << "," << f.thread_idx.y << "," << f.thread_idx.z << ")";
  return s.str();
}

std::string block_where(const LaunchState& L) {
  std::ostringstream s;
  s << "block (" << L.block_idx.x << "," << L.block_idx.y << "," << L.block_idx.z << ")";
  return s.str();
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Shfl: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::SyncWarp: return "__syncwarp";
    case WarpOp::Wmma: return "wmma collective";
  }
  return "?";
}

// ---- switching --------------------------------------------------------------------------------
inline void asan_start_switch(void** save, const void* bottom, size_t size) {
#ifdef SIMT_ASAN
  __sanitizer_start_switch_fiber(save, bottom, size);
#else
  (void)save; (void)bottom; (void)size;
#endif
}
inline void asan_finish_switch(void* save, const void** bottom, size_t* size) {
#ifdef SIMT_ASAN
  __sanitizer_finish_switch_fiber(save, bottom, size);
#else
  (void)save; (void)bottom; (void)size;
#endif
}

// Fiber -> hub. `exiting`: the fiber will never be resumed.
[[noreturn]] void jump_to_hub(LaunchState& L, Fiber* f, bool exiting) {
#ifdef SIMT_ASAN
  asan_start_switch(exiting ? nullptr : &f->fake_stack, L.hub_stack_bottom, L.hub_stack_size);
#else
  (void)f; (void)exiting;
#endif
  _longjmp(L.hub_jb, 1);
}

void arrived_on_fiber(LaunchState& L, Fiber* f) {
#ifdef SIMT_ASAN
  asan_finish_switch(f->fake_stack, &L.hub_stack_bottom, &L.hub_stack_size);
#else
  (void)L; (void)f;
#endif
}

// Suspends the current fiber until the hub resumes it.
void yield(LaunchState& L, Fiber* f) {
  ++g_stats.switches;
  if (_setjmp(f->jb) == 0) jump_to_hub(L, f, false);
  arrived_on_fiber(L, f);
}

void fiber_entry() {
  LaunchState& L = *t_launch;
  Fiber* f = t_fiber;
  arrived_on_fiber(L, f);
  try {
    L.body();
  } catch (const FiberFailure& e) {
    if (L.error.empty()) L.error = e.message + " (" + where(*f) + " of " + block_where(L) + ")";
  } catch (const std::exception& e) {
    if (L.error.empty()) L.error = "kernel threw in " + where(*f) + " of " + block_where(L) + ": " + e.what();
  } catch (...) {
    if (L.error.empty()) L.error = "kernel threw a non-standard exception in " + where(*f);
  }
  if (L.error.empty()) {
    // thread exit: check it leaves no one waiting for it
    f->state = State::Exited;
    --L.live;
    WarpState& w = L.warps[(size_t)f->warp];
    w.exited |= 1u << f->lane;
    if (w.pending & (1u << f->lane)) {
      std::ostringstream s;
      s << op_name(w.op) << " at " << w.file << ":" << w.line << " in " << block_where(L) << ": mask 0x" << std::hex
        << w.pending << std::dec << " names lane " << f->lane << " of warp " << f->warp << ", which has exited";
      L.error = s.str();
    } else if (L.at_barrier > 0) {
      const Fiber* waiting = nullptr;
      for (const Fiber& g : *L.fibers)
        if (g.state == State::AtBarrier) { waiting = &g; break; }
      std::ostringstream s;
      s << "divergent __syncthreads in " << block_where(L) << ": " << where(*f) << " exited while " << L.at_barrier
        << " thread(s) wait at " << waiting->site_file << ":" << waiting->site_line;
      L.error = s.str();
    }
  }
  jump_to_hub(L, f, true);
}

void resume(LaunchState& L, Fiber* f) {
  t_fiber = f;
  ++g_stats.switches;
  if (_setjmp(L.hub_jb) == 0) {
    if (!f->started) {
      f->started = true;
      getcontext(&f->uc);
      f->uc.uc_stack.ss_sp = f->stack_lo;
      f->uc.uc_stack.ss_size = kStackSize;
      f->uc.uc_link = nullptr;
      makecontext(&f->uc, fiber_entry, 0);
#ifdef SIMT_ASAN
      asan_start_switch(&L.hub_fake_stack, f->stack_lo, kStackSize);
#endif
      setcontext(&f->uc);
    } else {
#ifdef SIMT_ASAN
      asan_start_switch(&L.hub_fake_stack, f->stack_lo, kStackSize);
#endif
      _longjmp(f->jb, 1);
    }
  }
#ifdef SIMT_ASAN
  asan_finish_switch(L.hub_fake_stack, nullptr, nullptr);
#endif
  t_fiber = nullptr;
}

std::string describe_deadlock(const LaunchState& L) {
  std::ostringstream s;
  s << "deadlock in " << block_where(L) << ": no thread can run;";
  int barrier = 0;
  const Fiber* at_barrier = nullptr;
  for (const Fiber& f : *L.fibers) {
    if (f.state == State::AtBarrier) { ++barrier; at_barrier = &f; }
  }
  if (barrier) s << " " << barrier << " thread(s) wait at __syncthreads " << at_barrier->site_file << ":" << at_barrier->site_line << ";";
  for (size_t w = 0; w < L.warps.size(); ++w) {
    const WarpState& ws = L.warps[w];
    if (!ws.pending) continue;
    s << " warp " << w << " waits in " << op_name(ws.op) << " at " << ws.file << ":" << ws.line << " for lanes 0x" << std::hex
      << (ws.pending & ~ws.arrived) << std::dec << ";";
  }
  return s.str();
}

}  // namespace

// Unwinds the failing fiber's stack (so its frames' strings are freed) up to fiber_entry, which
// records the message and returns to the hub.
[[noreturn]] void fail(const std::string& message) { throw FiberFailure{message}; }

const uint3& thread_idx() { return t_fiber->thread_idx; }
const uint3& block_idx() { return t_launch->block_idx; }
const dim3& block_dim() { return t_launch->block; }
const dim3& grid_dim() { return t_launch->grid; }

void* dynamic_shared() {
  LaunchState& L = *t_launch;
  if (L.dyn_smem_size == 0) fail("dynamic shared memory used but the launch asked for 0 bytes");
  return L.dyn_smem;
}

void syncthreads(const char* file, int line) {
  LaunchState& L = *t_launch;
  Fiber* f = t_fiber;
  f->state = State::AtBarrier;
  f->site_file = file;
  f->site_line = line;
  if (++L.at_barrier == L.live) {
    // everyone arrived: all must be at the same barrier
    for (Fiber& g : *L.fibers) {
      if (g.state != State::AtBarrier) continue;
      if (g.site_line != line || std::strcmp(g.site_file, file) != 0) {
        std::ostringstream s;
        s << "divergent __syncthreads: " << where(g) << " waits at " << g.site_file << ":" << g.site_line << " while "
          << where(*f) << " waits at " << file << ":" << line;
        fail(s.str());
      }
    }
    for (Fiber& g : *L.fibers)
      if (g.state == State::AtBarrier) g.state = State::Runnable;
    L.at_barrier = 0;
  }
  // Always go back to the hub, so the schedule restarts from the lowest runnable thread: a
  // missing barrier then shows up as a read of data no thread has written yet.
  yield(L, f);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
  LaunchState& L = *t_launch;
  Fiber* f = t_fiber;
  WarpState& w = L.warps[(size_t)f->warp];
  const unsigned me = 1u << f->lane;
  const unsigned exists = w.size == 32 ? 0xffffffffu : ((1u << w.size) - 1);
  std::ostringstream s;
  if (width <= 0 || width > 32 || (width & (width - 1))) {
    s << op_name(op) << " at " << file << ":" << line << ": width " << width << " is not a power of two in 1..32";
    fail(s.str());
  }
  if (!(mask & me)) {
    s << op_name(op) << " at " << file << ":" << line << ": the calling lane " << f->lane << " is not in mask 0x" << std::hex << mask;
    fail(s.str());
  }
  if (mask & ~exists) {
    s << op_name(op) << " at " << file << ":" << line << ": mask 0x" << std::hex << mask << std::dec
      << " names lanes that do not exist in warp " << f->warp << " (it has " << w.size << " lanes)";
    fail(s.str());
  }
  if (mask & w.exited) {
    s << op_name(op) << " at " << file << ":" << line << ": mask 0x" << std::hex << mask << " names exited lane(s) 0x"
      << (mask & w.exited) << std::dec << " of warp " << f->warp;
    fail(s.str());
  }
  if (w.pending) {
    if (w.pending != mask || w.op != op) {
      s << "divergent warp collectives in warp " << f->warp << ": lane " << f->lane << " calls " << op_name(op) << " (mask 0x"
        << std::hex << mask << std::dec << ") at " << file << ":" << line << " while other lanes wait in " << op_name(w.op)
        << " (mask 0x" << std::hex << w.pending << std::dec << ") at " << w.file << ":" << w.line;
      fail(s.str());
    }
  } else {
    w.pending = mask;
    w.arrived = 0;
    w.op = op;
    w.width = width;
    w.file = file;
    w.line = line;
  }
  f->warp_in = value;
  f->warp_arg = arg;
  w.arrived |= me;
  f->state = State::AtWarp;
  if (w.arrived == mask) {
    // the last lane computes every lane's result, then releases them
    Fiber* lanes = &(*L.fibers)[(size_t)f->warp * 32];
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l)
      if ((mask >> l) & 1 && lanes[l].warp_in) ballot |= 1u << l;
    for (int l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1)) continue;
      Fiber& g = lanes[l];
      const int seg = l & ~(width - 1);
      int src = l;
      switch (op) {
        case WarpOp::Shfl: src = seg + (g.warp_arg & (width - 1)); break;
        case WarpOp::ShflUp: src = l - g.warp_arg >= seg ? l - g.warp_arg : l; break;
        case WarpOp::ShflDown: src = l + g.warp_arg < seg + width ? l + g.warp_arg : l; break;
        case WarpOp::ShflXor: src = l ^ g.warp_arg; if (src >= seg + width) src = l; break;
        default: break;
      }
      switch (op) {
        case WarpOp::Shfl: case WarpOp::ShflUp: case WarpOp::ShflDown: case WarpOp::ShflXor:
          if (src < 0 || src >= 32 || !((mask >> src) & 1)) {
            std::ostringstream e;
            e << op_name(op) << " at " << file << ":" << line << ": lane " << l << " reads lane " << src
              << ", which is not in mask 0x" << std::hex << mask << " (its value is undefined)";
            fail(e.str());
          }
          g.warp_out = lanes[src].warp_in;
          break;
        case WarpOp::Ballot: g.warp_out = ballot; break;
        case WarpOp::Any: g.warp_out = ballot != 0; break;
        case WarpOp::All: g.warp_out = ballot == mask; break;
        case WarpOp::SyncWarp: case WarpOp::Wmma: g.warp_out = 0; break;
      }
      g.state = State::Runnable;
    }
    w.pending = 0;
    w.arrived = 0;
  }
  yield(L, f);
  return f->warp_out;
}

}  // namespace detail

void set_options(const Options& o) {
  std::lock_guard<std::mutex> lock(detail::g_launch_mutex);
  detail::g_options = o;
}
Options options() {
  std::lock_guard<std::mutex> lock(detail::g_launch_mutex);
  return detail::g_options;
}
Stats stats() {
  std::lock_guard<std::mutex> lock(detail::g_launch_mutex);
  return detail::g_stats;
}

void launch_thunk(dim3 grid, dim3 block, size_t dynamic_smem, std::function<void()> body) {
  using namespace detail;
  using medllava::Error;
  using medllava::ErrorCode;
  const uint64_t threads = (uint64_t)block.x * block.y * block.z;
  const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
  if (threads == 0 || threads > kMaxThreads || block.x > 1024 || block.y > 1024 || block.z > 64 || blocks == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    std::ostringstream s;
    s << "simt: invalid launch configuration grid (" << grid.x << "," << grid.y << "," << grid.z << ") block (" << block.x << ","
      << block.y << "," << block.z << ")";
    throw Error(ErrorCode::Cuda, s.str());
  }
  if (dynamic_smem > kMaxDynamicShared)
    throw Error(ErrorCode::Cuda, "simt: dynamic shared memory " + std::to_string(dynamic_smem) + " bytes exceeds the " +
                                     std::to_string(kMaxDynamicShared) + "-byte maximum");
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  if (t_launch) throw Error(ErrorCode::Cuda, "simt: kernel launch from inside a kernel is not supported");
  const std::vector<Region>& statics = shared_statics();

  std::vector<Fiber> fibers((size_t)threads);
  std::vector<unsigned char> dyn(dynamic_smem + 128);
  LaunchState L;
  L.grid = grid;
  L.block = block;
  L.body = std::move(body);
  L.fibers = &fibers;
  L.threads = (int)threads;
  L.dyn_smem = dyn.data() + (128 - reinterpret_cast<uintptr_t>(dyn.data()) % 128) % 128;
  L.dyn_smem_size = dynamic_smem;
  L.warps.resize((size_t)((threads + 31) / 32));
  for (size_t i = 0; i < fibers.size(); ++i) fibers[i].stack_lo = stack_pool().get(i);

  std::vector<uint64_t> order((size_t)blocks);
  for (uint64_t b = 0; b < blocks; ++b) order[(size_t)b] = b;
  if (g_options.block_order == BlockOrder::Reverse) std::reverse(order.begin(), order.end());
  if (g_options.block_order == BlockOrder::Shuffle) {
    std::mt19937_64 rng(g_options.seed);
    std::shuffle(order.begin(), order.end(), rng);
  }
  ++g_stats.launches;

  t_launch = &L;
  struct Reset {
    ~Reset() { t_launch = nullptr; t_fiber = nullptr; }
  } reset;
  for (uint64_t b : order) {
    L.block_idx = uint3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((uint64_t)grid.x * grid.y))};
    if (g_options.poison_shared) {
      for (const Region& r : statics) std::memset(r.addr, 0xff, r.size);
      std::memset(L.dyn_smem, 0xff, dynamic_smem);
    }
    for (int i = 0; i < L.threads; ++i) {
      Fiber& f = fibers[(size_t)i];
      f.started = false;
      f.state = State::Runnable;
      f.thread_idx = uint3{(unsigned)(i % block.x), (unsigned)((i / block.x) % block.y), (unsigned)(i / (block.x * block.y))};
      f.linear = i;
      f.warp = i / 32;
      f.lane = i % 32;
    }
    for (size_t w = 0; w < L.warps.size(); ++w) {
      L.warps[w] = WarpState{};
      L.warps[w].size = (int)std::min<uint64_t>(32, threads - w * 32);
    }
    L.live = L.threads;
    L.at_barrier = 0;
    ++g_stats.blocks;
    g_stats.threads += threads;
    for (;;) {
      Fiber* next = nullptr;
      if (g_options.reverse_threads) {
        for (int i = L.threads - 1; i >= 0 && !next; --i)
          if (fibers[(size_t)i].state == State::Runnable) next = &fibers[(size_t)i];
      } else {
        for (int i = 0; i < L.threads && !next; ++i)
          if (fibers[(size_t)i].state == State::Runnable) next = &fibers[(size_t)i];
      }
      if (!next) {
        if (L.live == 0) break;
        throw Error(ErrorCode::Cuda, "simt: " + describe_deadlock(L));
      }
      resume(L, next);
      if (!L.error.empty()) throw Error(ErrorCode::Cuda, "simt: " + L.error);
    }
  }
}

}  // namespace simt
