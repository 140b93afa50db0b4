// medllava::Error — the one failure type of the core. Every throw site names a code from the
// list in docs/API.md; napi/ turns it into a JS Error with `.code`.
#pragma once
#include <stdexcept>
#include <string>

namespace medllava {

enum class ErrorCode {
  Argument,     // E_ARGUMENT: a caller passed something invalid (or used a disposed object)
  IO,           // E_IO
  Format,       // E_FORMAT: a file is malformed
  Unsupported,  // E_UNSUPPORTED
  Shape,        // E_SHAPE: tensor shapes disagree
  Image,        // E_IMAGE
  ContextFull,  // E_CONTEXT_FULL
  Aborted,      // E_ABORTED
  OOM,          // E_OOM
  Cuda,         // E_CUDA
  Timeout,      // E_TIMEOUT: a wait on other processes (an MPI collective) ran past its limit
  Internal,     // E_INTERNAL: medllava's own failure (a bug, or the system refused something), not the caller's
};

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::Argument: return "E_ARGUMENT";
    case ErrorCode::IO: return "E_IO";
    case ErrorCode::Format: return "E_FORMAT";
    case ErrorCode::Unsupported: return "E_UNSUPPORTED";
    case ErrorCode::Shape: return "E_SHAPE";
    case ErrorCode::Image: return "E_IMAGE";
    case ErrorCode::ContextFull: return "E_CONTEXT_FULL";
    case ErrorCode::Aborted: return "E_ABORTED";
    case ErrorCode::OOM: return "E_OOM";
    case ErrorCode::Cuda: return "E_CUDA";
    case ErrorCode::Timeout: return "E_TIMEOUT";
    case ErrorCode::Internal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }
  const char* code_name() const { return error_code_name(code_); }

 private:
  ErrorCode code_;
};

}  // namespace medllava
