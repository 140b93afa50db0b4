#include "thread_pool.h"

#include <atomic>
#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace medllava {

namespace {
thread_local bool t_inside_task = false;
}

int physical_core_count() {
  // /proc/cpuinfo pairs "physical id" with "core id"; count the distinct pairs.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  int phys = 0;
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (line.rfind("physical id", 0) == 0) phys = std::atoi(line.c_str() + colon + 1);
    if (line.rfind("core id", 0) == 0) cores.insert({phys, std::atoi(line.c_str() + colon + 1)});
  }
  int logical = (int)std::thread::hardware_concurrency();
  if (cores.empty()) return logical > 0 ? logical : 1;
  int n = (int)cores.size();
  return logical > 0 && n > logical ? logical : n;
}

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() : threads_(physical_core_count()) {}

ThreadPool::~ThreadPool() {
  std::lock_guard<std::mutex> call(call_mutex_);
  stop_locked();
}

void ThreadPool::set_threads(int n) {
  std::lock_guard<std::mutex> call(call_mutex_);
  if (n < 1) n = 1;
  if (n == threads_) return;
  stop_locked();
  threads_ = n;
}

void ThreadPool::stop_locked() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  started_threads_ = 0;
  stopping_ = false;
}

void ThreadPool::start_locked() {
  // worker 0 is the calling thread
  for (int w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { worker_main(w); });
  started_threads_ = threads_;
}

void ThreadPool::run_tasks(int worker) {
  t_inside_task = true;
  for (;;) {
    size_t task;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_task_ >= tasks_) break;
      task = next_task_++;
    }
    (*job_)(task, worker);
  }
  t_inside_task = false;
}

void ThreadPool::worker_main(int worker) {
  unsigned long seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    run_tasks(worker);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(size_t tasks, const std::function<void(size_t, int)>& fn) {
  if (tasks == 0) return;
  if (t_inside_task || tasks == 1) {
    for (size_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  if (threads_ == 1) {
    t_inside_task = true;
    for (size_t t = 0; t < tasks; ++t) fn(t, 0);
    t_inside_task = false;
    return;
  }
  if (started_threads_ != threads_) start_locked();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    tasks_ = tasks;
    next_task_ = 0;
    active_ = threads_ - 1;
    ++generation_;
  }
  wake_.notify_all();
  run_tasks(0);
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return active_ == 0; });
  job_ = nullptr;
}

}  // namespace medllava
