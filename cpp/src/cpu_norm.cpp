// cpu_norm.cpp: the gradient-norm reduction and in-place scaling of clip_grad_norm.
//
// Self-contained (its own OpenMP loop): every array is cut into fixed pieces of at most kPiece
// elements; the pieces are spread over the threads and each one's partial result is stored,
// then summed in piece order, so the result is the same for any thread count. An array whose
// elements fill one contiguous block (C or Fortran order, any permutation of dimensions,
// negative strides) is read as a flat block, since neither a sum nor a scaling cares about
// order; any other layout is walked element by element with its strides.
#include "cpu_norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "adamcore/finite.h"
#include "adamcore/half.h"
#include "adamcore/strided.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace adamcore {
namespace {

constexpr int64_t kPiece = int64_t{1} << 15;

enum class Reduce { sum_abs, sum_squares, max_abs, sum_pow };

struct Piece {
    const ArrayRef* array;
    char* base;  // lowest address of a dense array; the data pointer otherwise
    bool dense;
    int64_t begin, end;  // flat element range within the array
};

template <class T>
inline float as_float(T x) {
    return widen(x);
}
inline double as_double(double x) { return x; }
template <class T>
inline double as_double(T x) {
    return static_cast<double>(widen(x));
}

// max |x| on the bit patterns (finite.h): with the sign bit cleared, the order of the unsigned
// integers is the order of the magnitudes, and every NaN lies above inf. An integer max is exact
// in any order, so the compiler vectorizes it (a floating-point max with NaN handling it would not).
template <class T>
double max_abs(const T* ptr, int64_t n, int64_t step) {
    using U = typename FloatBits<T>::U;
    U m = 0;
    auto take = [&m](const T* at) {
        U u;
        std::memcpy(&u, at, sizeof u);
        u &= FloatBits<T>::magnitude;
        m = u > m ? u : m;
    };
    if (step == 1) {
        for (int64_t i = 0; i < n; ++i) take(ptr + i);
    } else {
        for (int64_t i = 0; i < n; ++i) take(ptr + i * step);
    }
    if (m > FloatBits<T>::exponent) return std::numeric_limits<double>::quiet_NaN();
    T value;
    std::memcpy(&value, &m, sizeof m);
    return as_double(value);
}

// The partial result of elements [begin, end) read at ptr[i * step] (step 1 for dense blocks).
template <Reduce R, class T>
double reduce_run(const T* ptr, int64_t n, int64_t step, double ord) {
    if constexpr (R == Reduce::max_abs) {
        return max_abs(ptr, n, step);
    } else {
        // eight independent accumulators: the compiler may keep them in vector registers
        // without reassociating any one of them
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        auto term = [ord](double x) {
            if constexpr (R == Reduce::sum_squares) return x * x;
            else if constexpr (R == Reduce::sum_abs) return std::fabs(x);
            else return std::pow(std::fabs(x), ord);
        };
        int64_t i = 0;
        if (step == 1) {
            for (; i + 8 <= n; i += 8)
                for (int j = 0; j < 8; ++j) acc[j] += term(as_double(ptr[i + j]));
        }
        for (; i < n; ++i) acc[i & 7] += term(as_double(ptr[i * step]));
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

template <class T>
inline void scale_one(T& x, double factor) {
    if constexpr (std::is_same_v<T, double>) {
        x = x * factor;
    } else {
        x = narrow(as_float(x) * static_cast<float>(factor), T{});
    }
}

template <class T>
void scale_run(T* ptr, int64_t n, int64_t step, double factor) {
    if (step == 1) {
        for (int64_t i = 0; i < n; ++i) scale_one(ptr[i], factor);
    } else {
        for (int64_t i = 0; i < n; ++i) scale_one(ptr[i * step], factor);
    }
}

// Calls run(pointer, count, step) over the elements [begin, end) (C order) of a strided array,
// one innermost-dimension run at a time.
template <class T, class Run>
void walk_strided(const ArrayRef& a, int64_t begin, int64_t end, Run run) {
    std::vector<int64_t> strides;
    append_strides(a, strides);
    const int64_t inner_stride = strides.back();
    walk_runs<1>(a.ndim, a.shape, strides.data(), begin, end, [&](const int64_t* off, int64_t count) {
        run(static_cast<T*>(a.data) + off[0], count, inner_stride);
    });
}

template <class T, class Run>
void for_piece_typed(const Piece& p, Run run) {
    if (p.dense || p.array->ndim == 0) {
        run(reinterpret_cast<T*>(p.base) + p.begin, p.end - p.begin, int64_t{1});
    } else {
        walk_strided<T>(*p.array, p.begin, p.end, run);
    }
}

// Dispatches on the piece's dtype: run is called with (T* ptr, count, step).
template <class Run>
void for_piece(const Piece& p, Run run) {
    switch (p.array->dtype) {
        case DType::float16: for_piece_typed<float16>(p, run); break;
        case DType::bfloat16: for_piece_typed<bfloat16>(p, run); break;
        case DType::float32: for_piece_typed<float>(p, run); break;
        case DType::float64: for_piece_typed<double>(p, run); break;
    }
}

std::vector<Piece> cut(const ArrayRef* arrays, size_t count) {
    std::vector<Piece> pieces;
    for (size_t i = 0; i < count; ++i) {
        const ArrayRef& a = arrays[i];
        const int64_t n = numel(a);
        int64_t low = 0;
        const ArrayRef* one = &a;
        const bool dense = dense_layout(&one, 1, &low);
        char* base = static_cast<char*>(a.data) + low * static_cast<int64_t>(dtype_size(a.dtype));
        for (int64_t b = 0; b < n; b += kPiece)
            pieces.push_back({&a, dense ? base : static_cast<char*>(a.data), dense, b,
                              std::min(n, b + kPiece)});
    }
    return pieces;
}

template <class Body>
void parallel_pieces(const std::vector<Piece>& pieces, Body body) {
    const int64_t n = static_cast<int64_t>(pieces.size());
#if defined(_OPENMP)
    const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), n));
    if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t k = 0; k < n; ++k) body(k);
        return;
    }
#endif
    for (int64_t k = 0; k < n; ++k) body(k);
}

template <Reduce R>
double reduce_all(const std::vector<Piece>& pieces, double ord) {
    std::vector<double> partial(pieces.size(), 0.0);
    parallel_pieces(pieces, [&](int64_t k) {
        double r = 0.0;
        for_piece(pieces[k], [&](const auto* ptr, int64_t n, int64_t step) {
            const double v = reduce_run<R>(ptr, n, step, ord);
            if constexpr (R == Reduce::max_abs)
                r = (v != v || v > r) && r == r ? v : r;  // NaN, once seen, stays
            else
                r += v;
        });
        partial[static_cast<size_t>(k)] = r;
    });
    double total = 0.0;
    for (double v : partial) {
        if constexpr (R == Reduce::max_abs) {
            if (v != v) return v;
            total = v > total ? v : total;
        } else {
            total += v;
        }
    }
    return total;
}

}  // namespace

double cpu_total_norm(const ArrayRef* arrays, size_t count, double ord) {
    if (!(ord > 0.0))
        throw Error(ErrorKind::invalid_value,
                    "norm_type must be > 0 (or inf), got " + std::to_string(ord));
    const std::vector<Piece> pieces = cut(arrays, count);
    if (std::isinf(ord)) return reduce_all<Reduce::max_abs>(pieces, ord);
    if (ord == 2.0) return std::sqrt(reduce_all<Reduce::sum_squares>(pieces, ord));
    if (ord == 1.0) return reduce_all<Reduce::sum_abs>(pieces, ord);
    return std::pow(reduce_all<Reduce::sum_pow>(pieces, ord), 1.0 / ord);
}

void cpu_scale(const ArrayRef* arrays, size_t count, double factor) {
    const std::vector<Piece> pieces = cut(arrays, count);
    parallel_pieces(pieces, [&](int64_t k) {
        for_piece(pieces[k], [&](auto* ptr, int64_t n, int64_t step) {
            scale_run(ptr, n, step, factor);
        });
    });
}

}  // namespace adamcore
