// libFuzzer target: gguf::parse on arbitrary bytes, then dequantize the first row of every tensor
// whose type we decode (the offsets and sizes were validated, so reads must stay in bounds).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../../native/core/error.h"
#include "../../native/formats/ggml_types.h"
#include "../../native/formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = medllava::gguf::parse(data, size, "fuzz");
    for (const auto& t : h.tensors) {
      if (!medllava::ggml::can_dequantize(t.type) || t.elements == 0) continue;
      const auto* info = medllava::ggml::type_info(t.type);
      const int64_t n = t.dims.empty() ? 1 : (int64_t)t.dims[0];
      if (n > 4096 || n % info->block_elems) continue;
      std::vector<float> row((size_t)n);
      medllava::ggml::dequantize(t.type, data + h.data_start + t.offset, row.data(), n);
    }
  } catch (const medllava::Error&) {
  }
  return 0;
}
