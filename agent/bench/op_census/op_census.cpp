// The ATen operations a training step dispatches, counted inside the process that runs it.
//
// Preloaded (LD_PRELOAD) into `ndhtl bench` or into the PyTorch reference, it registers a
// RecordFunction callback with libtorch, the hook torch.profiler uses, and counts every
// operator call between `ndhtl_op_census_begin(workload)` and `ndhtl_op_census_end(steps)`,
// which both benchmarks call around their timed steps when the symbols are there (dlsym /
// ctypes). At exit it writes one JSON object to $NDHTL_OP_CENSUS:
//   {"workloads": {NAME: {"steps": S, "ops": {OP: {"top": T, "leaf": L, "calls": C}}}}}
//
// A *top* call is one the framework made (the model code, Burn or torch.nn, or the autograd
// engine), not one an operator made inside its own implementation: the unit of dispatch
// overhead the framework controls. A *leaf* is a call that dispatched no other operator: the calls that reach a kernel (or a
// view or an allocation; scripts/op_census_report.py separates those). On a GPU each compute
// leaf is at least one kernel launch, so at batch 1, where a step is launch-bound, compute
// leaves per step are the count to cut. A `_foreach_*` call counts as one leaf whatever it
// calls inside: on the CPU it loops over its tensors, on CUDA it is one multi-tensor kernel
// per chunk of tensors.
//
// Built by scripts/op-census.sh against the torch wheel's headers and libraries.

#include <ATen/record_function.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct OpCounts {
  long long top = 0;
  long long leaf = 0;
  long long calls = 0;
};

struct WorkloadCounts {
  long long steps = 0;
  std::map<std::string, OpCounts> ops;
};

struct Frame {
  bool is_top = false;
  bool has_child = false;
  bool inside_foreach = false;
  bool is_foreach = false;
};

struct Census {
  std::mutex mutex;
  std::atomic<bool> active{false};
  std::string workload;
  std::map<std::string, WorkloadCounts> workloads;
};

Census& census() {
  static Census* instance = new Census();  // never destroyed: callbacks may outlive exit
  return *instance;
}

thread_local std::vector<Frame> frames;

// The autograd engine's record of one graph node's backward: a bracket around the operator
// calls of that backward, which count as the framework's own (top) calls.
bool is_autograd_node(const char* name) {
  return std::strncmp(name, "autograd::", 10) == 0;
}

bool is_foreach(const char* name) {
  return std::strncmp(name, "aten::_foreach_", 15) == 0;
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& call) {
  Census& state = census();
  if (!state.active.load(std::memory_order_relaxed)) {
    return nullptr;
  }
  if (is_autograd_node(call.name())) {
    return nullptr;
  }
  Frame frame;
  frame.is_top = frames.empty();
  if (!frames.empty()) {
    frames.back().has_child = true;
    frame.inside_foreach = frames.back().inside_foreach || frames.back().is_foreach;
  }
  frame.is_foreach = is_foreach(call.name());
  frames.push_back(frame);
  return nullptr;
}

void on_exit(const at::RecordFunction& call, at::ObserverContext*) {
  if (frames.empty() || is_autograd_node(call.name())) {
    return;  // entered before the census began, or a bracket
  }
  Frame frame = frames.back();
  frames.pop_back();
  if (frame.inside_foreach) {
    return;
  }
  Census& state = census();
  std::lock_guard<std::mutex> lock(state.mutex);
  OpCounts& counts = state.workloads[state.workload].ops[call.name()];
  counts.calls += 1;
  if (frame.is_top) {
    counts.top += 1;
  }
  if (!frame.has_child || frame.is_foreach) {
    counts.leaf += 1;
  }
}

void write_json() {
  const char* path = std::getenv("NDHTL_OP_CENSUS");
  if (path == nullptr || *path == '\0') {
    return;
  }
  Census& state = census();
  std::lock_guard<std::mutex> lock(state.mutex);
  std::FILE* out = std::fopen(path, "w");
  if (out == nullptr) {
    std::perror(path);
    return;
  }
  std::fprintf(out, "{\"workloads\": {");
  bool first_workload = true;
  for (const auto& [workload, counts] : state.workloads) {
    std::fprintf(out, "%s\n\"%s\": {\"steps\": %lld, \"ops\": {", first_workload ? "" : ",",
                 workload.c_str(), counts.steps);
    first_workload = false;
    bool first_op = true;
    for (const auto& [op, op_counts] : counts.ops) {
      std::fprintf(out, "%s\"%s\": {\"top\": %lld, \"leaf\": %lld, \"calls\": %lld}",
                   first_op ? "" : ", ", op.c_str(), op_counts.top, op_counts.leaf,
                   op_counts.calls);
      first_op = false;
    }
    std::fprintf(out, "}}");
  }
  std::fprintf(out, "\n}}\n");
  std::fclose(out);
}

struct Registration {
  Registration() {
    at::addGlobalCallback(at::RecordFunctionCallback(on_enter, on_exit)
                              .scopes({at::RecordScope::FUNCTION})
                              .needsInputs(false)
                              .needsOutputs(false));
    std::atexit(write_json);
  }
};

Registration registration;

}  // namespace

extern "C" {

// Counts from now on under `workload`.
void ndhtl_op_census_begin(const char* workload) {
  Census& state = census();
  std::lock_guard<std::mutex> lock(state.mutex);
  state.workload = workload;
  state.active.store(true, std::memory_order_relaxed);
}

// Stops counting; the calls since `ndhtl_op_census_begin` were `steps` steps.
void ndhtl_op_census_end(long long steps) {
  Census& state = census();
  std::lock_guard<std::mutex> lock(state.mutex);
  state.active.store(false, std::memory_order_relaxed);
  state.workloads[state.workload].steps += steps;
}

}  // extern "C"
