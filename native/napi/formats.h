#pragma once
#include <napi.h>

namespace medllava {
namespace napi {
// readSafetensorsHeader, readSafetensorsTensor, writeSafetensors, readGguf, readGgufTensor,
// writeGguf, ggmlQuantize, ggmlDequantize
void register_formats(Napi::Env env, Napi::Object exports);
}  // namespace napi
}  // namespace medllava
