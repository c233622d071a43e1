// cpu_parallel.h: how the CPU step shares its work among threads. The tensors' elements form one
// index space, handed to the threads in chunks taken from one counter, so a chunk may cover the
// end of one tensor and the start of the next (for_pieces cuts it back into tensors).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace adamcore::cpu {

// The thread count set_num_threads() chose (default OMP_NUM_THREADS, else every core).
std::atomic<int>& thread_setting();

// Below this many elements per thread, starting threads costs more than it saves.
constexpr int64_t min_elements_per_thread = 1 << 15;

// The chunk size the threads take from the shared counter (a multiple of a cache line of
// float16, so threads never share a cache line within a tensor).
int64_t chunk_size(int64_t total, int64_t threads);

// Runs body(begin, end) over [0, total), split among the threads in chunks taken dynamically
// from one counter; the pieces cover [0, total) exactly once, whatever the timing.
template <class Body>
void parallel_ranges(int64_t total, const Body& body) {
    const int64_t wanted = std::max<int64_t>(1, total / min_elements_per_thread);
    const int threads = static_cast<int>(std::min<int64_t>(thread_setting().load(), wanted));
    if (threads <= 1) {
        body(int64_t{0}, total);
        return;
    }
#if defined(_OPENMP)
    const int64_t chunk = chunk_size(total, threads);
    std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
    {
        for (;;) {
            const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
            if (begin >= total) break;
            body(begin, std::min(total, begin + chunk));
        }
    }
#else
    body(int64_t{0}, total);
#endif
}

// Calls visit(plan, lo, hi) for every tensor piece inside the global range [begin, end); plans
// are sorted by offset and hold offset and count (in the global index space).
template <class Plan, class Visit>
void for_pieces(const std::vector<Plan>& plans, int64_t begin, int64_t end, const Visit& visit) {
    auto it = std::upper_bound(plans.begin(), plans.end(), begin,
                               [](int64_t x, const Plan& p) { return x < p.offset + p.count; });
    for (; it != plans.end() && it->offset < end; ++it) {
        const int64_t lo = std::max(begin, it->offset) - it->offset;
        const int64_t hi = std::min(end, it->offset + it->count) - it->offset;
        if (lo < hi) visit(*it, lo, hi);
    }
}

}  // namespace adamcore::cpu
