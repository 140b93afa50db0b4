// The addon's per-environment data (each worker thread that loads the addon has its own env): the
// constructors native code needs after init. defines: AddonData, addon_data.
#pragma once
#include <napi.h>

namespace medllava {
namespace napi {

struct AddonData {
  Napi::FunctionReference context;  // NativeLlmContext (created by NativeLlm.createContext)
  Napi::FunctionReference image;    // NativeImage (created by NativeVision.encodeImage; checked by eval)
};

// this env's data, created on first use
inline AddonData& addon_data(Napi::Env env) {
  AddonData* d = env.GetInstanceData<AddonData>();
  if (!d) {
    d = new AddonData();
    env.SetInstanceData<AddonData>(d);
  }
  return *d;
}

}  // namespace napi
}  // namespace medllava
