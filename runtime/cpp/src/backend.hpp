// What every backend implements (as bld_runtime/backends/base.py): graph sessions for one
// bundle, and per batch size a Loop, the preallocated state of one batch going through the K
// steps. The pipeline drives a loop: start, then run_step + advance K times, then read_bits.
// Nothing in a loop allocates after it is made. A loop serves one call at a time; the backend
// itself (its sessions) is shared by all threads.
#pragma once

#include <sched.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bundle.hpp"

namespace bld::core {

struct BackendOptions {
    std::string backend = "cpu";  // cpu | cuda | tensorrt-ep | tensorrt
    std::string precision = "fp32";
    int64_t intra_op_threads = 0, inter_op_threads = 0;
    std::string graph_optimization = "all";
    int64_t device_id = 0;
    std::string trt_cache_dir;
    bool trt_fp16 = false;
    bool stop_spinning = true;
    std::string thread_pool = "session";  // session | shared (the process's one onnxruntime pool)
    // thread_pool "shared" only: the pool's threads each on a core of their own and the thread
    // that generates on the first usable core, for the call (CallerPin).
    bool pin_threads = false;
    bool verify_hashes = true;
};

// One batch's request, already checked; arrays have `batch` rows.
struct LoopRequest {
    const uint64_t *seeds;
    const int64_t *classes;
    const float *temperature;
    const float *guidance;
    bool guided;           // run step_guided (some guidance > 0)
    const uint8_t *keep;   // (batch, L, C) 1 where the known bit stays, or null
    const uint8_t *known;  // (batch, L, C) the known bits, or null
};

class Loop {
  public:
    virtual ~Loop() = default;
    size_t batch() const { return batch_; }
    // Load the request; draw the initial state (Philox subsequence 0, p = 0.5), masked.
    virtual void start(const LoopRequest &request) = 0;
    // Step i's graph on the current bits; the probabilities stay inside.
    virtual void run_step(int64_t i) = 0;
    // Draw with subsequence i + 1 (threshold p0 > 0.5 at the last step), then the mask.
    virtual void advance(int64_t i) = 0;
    // The current bits, uint8 (batch, L, C), valid until the next call.
    virtual const uint8_t *bits() = 0;
    // The last step's probabilities into out, float (batch, L, C).
    virtual void read_probs(float *out) = 0;

  protected:
    explicit Loop(size_t batch) : batch_(batch) {}
    size_t batch_;
};

class Backend {
  public:
    virtual ~Backend() = default;
    virtual std::unique_ptr<Loop> make_loop(size_t batch) = 0;
    // The CPU a generating thread is pinned to (option pin_threads), or none.
    virtual std::optional<int> caller_cpu() const { return std::nullopt; }
    // float NCHW images in [-1, 1] (n <= max_batch) -> float (n, L, C) bit probabilities.
    virtual void encode(const float *images, size_t n, float *probs) = 0;
    // (n, L, C) 0/1 bits as float -> float NCHW images.
    virtual void decode(const float *bits, size_t n, float *images) = 0;
};

// Pins the calling thread to `cpu` (none: does nothing) for its lifetime, then gives it back
// the CPUs it had. One CallerPin holds the core at a time: while one does, others do nothing.
// A failed pin is no error: the call runs where the system puts it.
class CallerPin {
  public:
    explicit CallerPin(std::optional<int> cpu);
    ~CallerPin();
    CallerPin(const CallerPin &) = delete;
    CallerPin &operator=(const CallerPin &) = delete;

  private:
    cpu_set_t saved_{};
    bool held_ = false, pinned_ = false;
};

// The backend named by options.backend for the graphs of options.precision; refuses a backend
// that cannot run here (BLD_ERROR_BACKEND_UNAVAILABLE), never falls back to another.
std::unique_ptr<Backend> create_backend(const Bundle &bundle, const BackendOptions &options);

// The graph of each role for a precision: fp16 swaps in the *_fp16 graphs, except the encoder;
// int8 the *_int8 step graphs.
std::string graph_for(const Bundle &bundle, const std::string &role, const std::string &precision);

// Why precision int8 cannot run on a CPU of architecture `machine` (uname) with feature `flags`
// (nullopt: unknown), in the Python runtime's sentence (backends/int8.py); nullopt when it can.
std::optional<std::string> int8_refusal(const std::string &machine, const std::optional<std::set<std::string>> &flags);

}  // namespace bld::core
