// The addon's `mpi` object: MPI's collectives for data-parallel training (native/dist/mpi.h).
#pragma once
#include <napi.h>

namespace medllava {
namespace napi {

Napi::Object MpiObject(Napi::Env env);

}  // namespace napi
}  // namespace medllava
