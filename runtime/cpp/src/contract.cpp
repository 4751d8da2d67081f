#include "contract.hpp"

#include "error.hpp"

namespace bld::core::contract {

std::vector<int64_t> sampling_timesteps(int64_t train_steps, int64_t sampling_steps) {
    const int64_t T = train_steps, K = sampling_steps;
    if (T < 2)
        fail(BLD_ERROR_CONTRACT,
             "the number of training steps T must be at least 2, got " + std::to_string(T));
    if (K < 2 || K > T)
        fail(BLD_ERROR_CONTRACT, "sampling steps must be between 2 and T=" + std::to_string(T) +
                                     ", got " + std::to_string(K));
    std::vector<int64_t> ts(static_cast<size_t>(K));
    for (int64_t i = 0; i < K; ++i) ts[static_cast<size_t>(K - 1 - i)] =
            static_cast<int64_t>(1 + static_cast<__int128>(i) * (T - 1) / (K - 1));
    return ts;
}

}  // namespace bld::core::contract
