// cpu_step_testing.h: the index arithmetic of cpu_step.cpp, exposed to the tests only
// (adamcore._core._testing), so sizes past 2^31 can be checked without the memory they describe.
#pragma once

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

namespace adamcore::testing {

// The [begin, end) chunks that `threads` threads take from the shared counter over `total` elements.
std::vector<std::pair<int64_t, int64_t>> chunks(int64_t total, int64_t threads);

// The (tensor, lo, hi) pieces a thread's global range [begin, end) covers, for tensors of the
// given element counts laid end to end (empty tensors take no place).
std::vector<std::tuple<int64_t, int64_t, int64_t>> pieces(const std::vector<int64_t>& counts,
                                                          int64_t begin, int64_t end);

// The element offsets the strided walk visits for logical elements [begin, end) (C order).
std::vector<int64_t> strided_offsets(const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& strides, int64_t begin,
                                     int64_t end);

}  // namespace adamcore::testing
