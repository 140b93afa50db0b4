// libFuzzer target: the restricted PyTorch checkpoint reader (zip directory + unpickler) on
// arbitrary bytes; every tensor it returns must lie inside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "../../native/core/error.h"
#include "../../native/formats/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tensors = medllava::torchfile::parse(data, size, "fuzz");
    for (const auto& t : tensors)
      if (t.file_offset + t.bytes > size) std::abort();
  } catch (const medllava::Error&) {
  }
  return 0;
}
