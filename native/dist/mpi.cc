// See mpi.h. Functions and Open MPI's predefined handles (ompi_mpi_comm_world, ompi_mpi_float, …)
// are resolved with dlsym from the libmpi opened at run time: mpi.h supplies only the types.
#include "mpi.h"

#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "../core/error.h"

#ifdef MEDLLAVA_WITH_MPI
#include <dlfcn.h>
#define OMPI_SKIP_MPICXX 1  // the C API only: no C++ bindings (their inline code would need libmpi at link time)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace medllava {
namespace mpi {

#ifndef MEDLLAVA_WITH_MPI

static const char* kNotBuilt =
    "medllava was built without MPI (mpi.h was not found): install Open MPI (Debian: apt-get install openmpi-bin "
    "libopenmpi-dev) and rebuild (npx medllava build)";
Info info() {
  Info i;
  i.reason = kNotBuilt;
  return i;
}
Info init() { throw Error(ErrorCode::Unsupported, kNotBuilt); }
void allreduce(void*, int64_t, Type, Op, int64_t) { throw Error(ErrorCode::Unsupported, kNotBuilt); }
void bcast(void*, int64_t, int, int64_t) { throw Error(ErrorCode::Unsupported, kNotBuilt); }
void barrier(int64_t) { throw Error(ErrorCode::Unsupported, kNotBuilt); }
void finalize() {}

#else

namespace {

struct Api {
  void* lib = nullptr;
  int (*Initialized)(int*) = nullptr;
  int (*Finalized)(int*) = nullptr;
  int (*Init_thread)(int*, char***, int, int*) = nullptr;
  int (*Finalize)() = nullptr;
  int (*Comm_rank)(MPI_Comm, int*) = nullptr;
  int (*Comm_size)(MPI_Comm, int*) = nullptr;
  int (*Iallreduce)(const void*, void*, int, MPI_Datatype, MPI_Op, MPI_Comm, MPI_Request*) = nullptr;
  int (*Ibcast)(void*, int, MPI_Datatype, int, MPI_Comm, MPI_Request*) = nullptr;
  int (*Ibarrier)(MPI_Comm, MPI_Request*) = nullptr;
  int (*Test)(MPI_Request*, int*, MPI_Status*) = nullptr;
  MPI_Comm world = nullptr;
  MPI_Datatype f32 = nullptr, f64 = nullptr, byte = nullptr;
  MPI_Op sum = nullptr, max = nullptr;
  void* in_place = nullptr;
};

std::mutex mu;
Api api;
Info state;
bool finalized = false;
bool broken = false;  // a collective timed out: MPI_Finalize would wait for the rank that is gone

template <class F>
void sym(F& f, const char* name) {
  f = reinterpret_cast<F>(dlsym(api.lib, name));
  if (!f) throw Error(ErrorCode::Unsupported, std::string("libmpi has no ") + name + ": Open MPI (libmpi.so.40) is expected");
}

template <class H>
H handle(const char* name) {
  void* p = dlsym(api.lib, name);
  if (!p) throw Error(ErrorCode::Unsupported, std::string("libmpi has no ") + name + ": Open MPI (libmpi.so.40) is expected");
  return reinterpret_cast<H>(p);
}

void open_library() {
  if (api.lib) return;
  for (const char* name : {"libmpi.so.40", "libmpi.so"}) {
    // RTLD_GLOBAL: Open MPI's components (dlopened by libmpi itself) resolve libmpi's symbols globally
    api.lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (api.lib) {
      state.library = name;
      break;
    }
  }
  if (!api.lib)
    throw Error(ErrorCode::Unsupported, std::string("cannot open libmpi (") + dlerror() +
                                            "): install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev)");
  sym(api.Initialized, "MPI_Initialized");
  sym(api.Finalized, "MPI_Finalized");
  sym(api.Init_thread, "MPI_Init_thread");
  sym(api.Finalize, "MPI_Finalize");
  sym(api.Comm_rank, "MPI_Comm_rank");
  sym(api.Comm_size, "MPI_Comm_size");
  sym(api.Iallreduce, "MPI_Iallreduce");
  sym(api.Ibcast, "MPI_Ibcast");
  sym(api.Ibarrier, "MPI_Ibarrier");
  sym(api.Test, "MPI_Test");
  // Open MPI's predefined handles are the addresses of these globals (what its mpi.h macros expand to)
  api.world = handle<MPI_Comm>("ompi_mpi_comm_world");
  api.f32 = handle<MPI_Datatype>("ompi_mpi_float");
  api.f64 = handle<MPI_Datatype>("ompi_mpi_double");
  api.byte = handle<MPI_Datatype>("ompi_mpi_byte");
  api.sum = handle<MPI_Op>("ompi_mpi_op_sum");
  api.max = handle<MPI_Op>("ompi_mpi_op_max");
  api.in_place = reinterpret_cast<void*>(1);  // Open MPI's MPI_IN_PLACE is ((void *) 1)
}

void check(int rc, const char* what) {
  if (rc != 0) throw Error(ErrorCode::Internal, std::string(what) + " failed (MPI error " + std::to_string(rc) + ")");
}

void require() {
  if (!state.initialized) throw Error(ErrorCode::Argument, "MPI is not initialised: call init() first (under mpirun)");
  if (finalized) throw Error(ErrorCode::Argument, "MPI has been finalised");
  if (broken) throw Error(ErrorCode::Timeout, "an earlier collective timed out: the communicator is unusable, exit this process");
}

// polls a non-blocking collective against its deadline
void wait(MPI_Request& req, int64_t timeout_ms, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (int spin = 0;; ++spin) {
    int done = 0;
    check(api.Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    if (std::chrono::steady_clock::now() > deadline) {
      broken = true;
      throw Error(ErrorCode::Timeout, std::string(what) + " on rank " + std::to_string(state.rank) + " of " + std::to_string(state.size) +
                                          " did not complete within " + std::to_string(timeout_ms) +
                                          " ms: another rank has died or stopped; the communicator is unusable, exit this process");
    }
    if (spin > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));  // leave the cores to the compute threads
  }
}

}  // namespace

Info info() {
  std::lock_guard<std::mutex> lock(mu);
  Info i = state;
  i.compiled = true;
  return i;
}

Info init() {
  std::lock_guard<std::mutex> lock(mu);
  state.compiled = true;
  if (state.initialized) return state;
  open_library();
  int already = 0;
  check(api.Initialized(&already), "MPI_Initialized");
  if (!already) {
    int provided = 0;
    check(api.Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED) throw Error(ErrorCode::Unsupported, "this MPI does not allow calls from more than one thread");
  }
  check(api.Comm_rank(api.world, &state.rank), "MPI_Comm_rank");
  check(api.Comm_size(api.world, &state.size), "MPI_Comm_size");
  state.initialized = true;
  return state;
}

void allreduce(void* buf, int64_t count, Type type, Op op, int64_t timeout_ms) {
  require();
  const int64_t es = type == Type::F32 ? 4 : 8;
  for (int64_t at = 0; at < count;) {  // MPI counts are int
    const int n = (int)std::min<int64_t>(count - at, (int64_t)1 << 30);
    MPI_Request req;
    check(api.Iallreduce(api.in_place, static_cast<char*>(buf) + at * es, n, type == Type::F32 ? api.f32 : api.f64,
                         op == Op::Sum ? api.sum : api.max, api.world, &req),
          "MPI_Iallreduce");
    wait(req, timeout_ms, "allreduce");
    at += n;
  }
}

void bcast(void* buf, int64_t bytes, int root, int64_t timeout_ms) {
  require();
  if (root < 0 || root >= state.size) throw Error(ErrorCode::Argument, "bcast: root is not a rank");
  for (int64_t at = 0; at < bytes;) {
    const int n = (int)std::min<int64_t>(bytes - at, (int64_t)1 << 30);
    MPI_Request req;
    check(api.Ibcast(static_cast<char*>(buf) + at, n, api.byte, root, api.world, &req), "MPI_Ibcast");
    wait(req, timeout_ms, "broadcast");
    at += n;
  }
}

void barrier(int64_t timeout_ms) {
  require();
  MPI_Request req;
  check(api.Ibarrier(api.world, &req), "MPI_Ibarrier");
  wait(req, timeout_ms, "barrier");
}

void finalize() {
  std::lock_guard<std::mutex> lock(mu);
  if (!state.initialized || finalized) return;
  finalized = true;
  // after a timeout the collective is still pending and MPI_Finalize would block on the missing rank: exit without
  // it (mpirun then ends the job, reporting this rank)
  if (broken) return;
  int done = 0;
  api.Finalized(&done);
  if (!done) api.Finalize();
}

#endif

}  // namespace mpi
}  // namespace medllava
