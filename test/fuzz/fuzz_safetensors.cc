// libFuzzer target: safetensors::parse on arbitrary bytes. Any outcome but a medllava::Error or a
// clean parse (a crash, a sanitizer report, a hang, another exception) is a finding.
#include <cstddef>
#include <cstdint>

#include "../../native/core/error.h"
#include "../../native/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = medllava::safetensors::parse(data, size, "fuzz");
    // touch every tensor's bytes: the offsets were validated, so this must stay in bounds
    volatile uint8_t sink = 0;
    for (const auto& t : h.tensors)
      if (t.end > t.begin) sink = sink ^ data[h.data_start + t.begin] ^ data[h.data_start + t.end - 1];
    (void)sink;
  } catch (const medllava::Error&) {
  }
  return 0;
}
