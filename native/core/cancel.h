// Cooperative cancellation of long native work (a training step): request() from any thread; the
// work calls check() at safe points — between layers — which throws E_ABORTED once requested.
// `countdown` (tests) requests it at the k-th check, so a test can stop a step at a chosen point.
// defines: CancelToken.
#pragma once
#include <atomic>
#include <cstdint>

#include "error.h"

namespace medllava {

struct CancelToken {
  void request() { requested_ = true; }
  void reset(int64_t countdown = -1) { requested_ = false, countdown_ = countdown; }
  void check() const {
    if (countdown_.load(std::memory_order_relaxed) >= 0 && countdown_.fetch_sub(1) == 0) requested_ = true;
    if (requested_.load(std::memory_order_relaxed)) throw Error(ErrorCode::Aborted, "the training step was aborted");
  }

 private:
  mutable std::atomic<bool> requested_{false};
  mutable std::atomic<int64_t> countdown_{-1};
};

// check() through a pointer that may be null (no cancellation)
inline void check_cancel(const CancelToken* c) {
  if (c) c->check();
}

}  // namespace medllava
