// The ATen operations a training step dispatches, counted inside the process that runs it.
//
// Preloaded (LD_PRELOAD) into `ndhtl bench` or into the PyTorch reference, it registers a
// RecordFunction callback with libtorch, the hook torch.profiler uses, and counts every
// operator call between `ndhtl_op_census_begin(workload)` and `ndhtl_op_census_end(steps)`,
// which both benchmarks call around their timed steps when the symbols are there (dlsym /
// ctypes). At exit it writes one JSON object to $NDHTL_OP_CENSUS:
//   {"workloads": {NAME: {"steps": S, "ops": {OP: {"top": T, "calls": C}}}}}
//
// A *top* call is one the framework made (the model code, Burn or torch.nn, or the autograd
// engine), not one an operator made inside its own implementation: the unit of dispatch
// overhead the framework controls, and on a GPU at least one kernel launch unless the call only
// makes a view (scripts/op_census_report.py counts views apart). At batch 1, where a GPU step is
// launch-bound, top calls per step are the count to cut. *calls* counts every call, nested ones
// too. A `_foreach_*` call is one call, as on CUDA it is one multi-tensor kernel per chunk of
// tensors (on the CPU it loops over them).
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

namespace {

struct OpCounts {
  long long top = 0;
  long long calls = 0;
};

struct WorkloadCounts {
  long long steps = 0;
  std::map<std::string, OpCounts> ops;
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

// How many operator calls this thread is inside of, while counting.
thread_local int depth = 0;

// The autograd engine's record of one graph node's backward: a bracket around the operator
// calls of that backward, which count as the framework's own (top) calls.
bool is_autograd_node(const char* name) {
  return std::strncmp(name, "autograd::", 10) == 0;
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& call) {
  if (!census().active.load(std::memory_order_relaxed) || is_autograd_node(call.name())) {
    return nullptr;
  }
  Census& state = census();
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    OpCounts& counts = state.workloads[state.workload].ops[call.name()];
    counts.calls += 1;
    if (depth == 0) {
      counts.top += 1;
    }
  }
  depth += 1;
  return nullptr;
}

void on_exit(const at::RecordFunction& call, at::ObserverContext*) {
  if (depth == 0 || is_autograd_node(call.name())) {
    return;  // entered before the census began, or a bracket
  }
  depth -= 1;
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
      std::fprintf(out, "%s\"%s\": {\"top\": %lld, \"calls\": %lld}", first_op ? "" : ", ",
                   op.c_str(), op_counts.top, op_counts.calls);
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
