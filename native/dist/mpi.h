// Data-parallel collectives over MPI (Open MPI from the system, loaded at run time).
//
// The module is compiled when mpi.h is found at build time (CMake defines MEDLLAVA_WITH_MPI; otherwise
// every call says how to get it). libmpi itself is opened at run time with RTLD_GLOBAL — Node loads
// addons RTLD_LOCAL, and Open MPI's plugins need libmpi's symbols global — so the addon loads on a
// machine without MPI and only init() needs it. The collectives are non-blocking MPI calls polled
// against a deadline: a rank that died or hangs makes the others fail with E_TIMEOUT instead of
// waiting for ever. After a timeout the communicator is unusable: the process should report and exit.
#pragma once
#include <cstdint>
#include <string>

namespace medllava {
namespace mpi {

struct Info {
  bool compiled = false;     // built with mpi.h
  bool initialized = false;  // init() ran
  int rank = 0, size = 1;
  std::string library;       // the libmpi that was opened
  std::string reason;        // why it cannot be used, when it cannot
};

Info info();
// Opens libmpi (RTLD_GLOBAL) and initialises MPI once (MPI_THREAD_SERIALIZED: the collectives run on
// worker threads, one at a time). E_UNSUPPORTED with the reason when there is no MPI.
Info init();
enum class Type { F32, F64 };
enum class Op { Sum, Max };
// In place over `count` elements; E_TIMEOUT when the others do not join within timeout_ms.
void allreduce(void* buf, int64_t count, Type type, Op op, int64_t timeout_ms);
void bcast(void* buf, int64_t bytes, int root, int64_t timeout_ms);
void barrier(int64_t timeout_ms);
// MPI_Finalize (once; later calls do nothing). On the thread that called init().
void finalize();

}  // namespace mpi
}  // namespace medllava
