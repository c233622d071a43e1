// cpu_parallel.cpp: the CPU core's thread setting and chunking (cpu_parallel.h), and their
// index arithmetic exposed to the tests.
#include "cpu_parallel.h"

#include "adamcore/core.hpp"
#include "cpu_step_testing.h"

namespace adamcore {
namespace cpu {
namespace {

int default_threads() {
#if defined(_OPENMP)
    return std::max(1, omp_get_max_threads());  // honours OMP_NUM_THREADS and the affinity mask
#else
    return 1;
#endif
}

constexpr int64_t split_granule = 64;
// Work is handed out in chunks of at least this many elements (64 KiB of each float32 array):
// small enough that a thread the OS has descheduled (these machines are shared) holds up at most
// one chunk, large enough that taking a chunk (one atomic add, one search for its tensors) is
// noise next to the chunk's memory traffic.
constexpr int64_t min_chunk = 1 << 14;
constexpr int64_t chunks_per_thread = 8;

}  // namespace

std::atomic<int>& thread_setting() {
    static std::atomic<int> threads{default_threads()};
    return threads;
}

int64_t chunk_size(int64_t total, int64_t threads) {
    const int64_t chunk = std::max(min_chunk, total / (threads * chunks_per_thread));
    return (chunk + split_granule - 1) / split_granule * split_granule;
}

}  // namespace cpu

int get_num_threads() { return cpu::thread_setting().load(); }

void set_num_threads(int n) {
    if (n < 1) throw Error(ErrorKind::invalid_value, "the number of threads must be >= 1");
    cpu::thread_setting().store(n);
}

// ---- the index arithmetic above, callable from tests (adamcore._core._testing) --------------

namespace testing {

std::vector<std::pair<int64_t, int64_t>> chunks(int64_t total, int64_t threads) {
    // the ranges parallel_ranges hands out, in the order the counter gives them
    std::vector<std::pair<int64_t, int64_t>> out;
    const int64_t chunk = cpu::chunk_size(total, threads);
    for (int64_t begin = 0; begin < total; begin += chunk) {
        out.emplace_back(begin, std::min(total, begin + chunk));
    }
    return out;
}

std::vector<std::tuple<int64_t, int64_t, int64_t>> pieces(const std::vector<int64_t>& counts,
                                                          int64_t begin, int64_t end) {
    struct Plan {
        int64_t index, offset, count;
    };
    std::vector<Plan> plans;
    int64_t total = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
        if (counts[i] == 0) continue;  // as cpu_adam_step skips empty tensors
        plans.push_back({static_cast<int64_t>(i), total, counts[i]});
        total += counts[i];
    }
    std::vector<std::tuple<int64_t, int64_t, int64_t>> out;
    cpu::for_pieces(plans, begin, end,
                    [&](const Plan& p, int64_t lo, int64_t hi) { out.emplace_back(p.index, lo, hi); });
    return out;
}

}  // namespace testing
}  // namespace adamcore
