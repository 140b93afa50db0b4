// One std::thread pool per process. Not OpenMP: libgomp crashes when its first use is from a
// thread it did not create (our AsyncWorkers run on libuv's pool).
#pragma once
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace medllava {

class ThreadPool {
 public:
  // The process-wide pool. Threads are created lazily, on the first parallel_for.
  static ThreadPool& instance();

  // Runs fn(task, worker) for task in [0, tasks) on up to threads() workers (the caller is one of
  // them) and returns when all are done. Tasks are handed out dynamically. Calls from different
  // OS threads are serialised; a call from inside a task runs inline (no nested parallelism).
  void parallel_for(size_t tasks, const std::function<void(size_t task, int worker)>& fn);

  int threads() const { return threads_; }
  void set_threads(int n);  // n >= 1; takes effect on the next parallel_for

  ~ThreadPool();

 private:
  ThreadPool();
  void start_locked();
  void stop_locked();
  void worker_main(int worker);
  void run_tasks(int worker);

  std::mutex call_mutex_;  // serialises parallel_for callers
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  int threads_ = 1;
  int started_threads_ = 0;
  bool stopping_ = false;
  unsigned long generation_ = 0;
  const std::function<void(size_t, int)>* job_ = nullptr;
  size_t tasks_ = 0;
  size_t next_task_ = 0;
  int active_ = 0;
};

// Physical cores of this machine (hyper-threads not counted): the default thread count.
int physical_core_count();

}  // namespace medllava
