// The parts of the sampling contract (docs/SAMPLING_CONTRACT.md) that the host side computes:
// the schedule names and the sampling timesteps (section 3). The per-step probabilities live in
// the step graphs; the draws are bld_philox.h's (section 2).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bld::core::contract {

inline const std::vector<std::string> kSchedules = {"linear", "cosine", "sigmoid"};

// tau_i = 1 + floor(i (T - 1) / (K - 1)), i = 0..K-1, in visiting (decreasing) order.
// Throws BLD_ERROR_CONTRACT for T < 2 or K outside 2..T, with bld_runtime.contract's message.
std::vector<int64_t> sampling_timesteps(int64_t train_steps, int64_t sampling_steps);

}  // namespace bld::core::contract
