// cpu_strided.cpp: the strided CPU step and finite check (cpu_strided.h).
#include "cpu_strided.h"

#include "adamcore/finite.h"
#include "adamcore/half.h"
#include "adamcore/lowp.h"
#include "adamcore/strided.h"
#include "adamcore/update.h"
#include "cpu_step_testing.h"

namespace adamcore::cpu {
namespace {

template <class T>
T& at(void* data, int64_t offset) {
    return static_cast<T*>(data)[offset];
}

template <int C, bool L2, bool AMSGRAD, int Mode>
void strided_update(const StridedTensor& st, int64_t begin, int64_t end, const StepCoeffs& c) {
    using P = typename ComboTypes<C>::P;
    using G = typename ComboTypes<C>::G;
    using S = typename ComboTypes<C>::S;
    using M = typename ComboTypes<C>::M;
    const Coeffs<S>& coeffs = [&]() -> const Coeffs<S>& {
        if constexpr (std::is_same_v<S, double>) return c.f64; else return c.f32;
    }();
    const TensorRef& t = *st.ref;
    int64_t index = begin;  // the logical (C-order) index: stochastic rounding's counter
    walk_elements<6>(t.param.ndim, t.param.shape, st.strides.data(), begin, end,
                     [&](const int64_t* off) {
        M unused{};
        P no_comp{};
        M& vmax = AMSGRAD ? at<M>(t.max_exp_avg_sq.data, off[4]) : unused;
        P& comp = Mode == round_kahan ? at<P>(t.compensation.data, off[5]) : no_comp;
        const uint32_t random =
            Mode == round_stochastic ? random_bits(st.key, static_cast<uint64_t>(index)) : 0u;
        update_element<Mode, L2, AMSGRAD>(at<P>(t.param.data, off[0]), at<G>(t.grad.data, off[1]),
                                          at<M>(t.exp_avg.data, off[2]),
                                          at<M>(t.exp_avg_sq.data, off[3]), vmax, comp, random,
                                          coeffs);
        ++index;
    });
}

template <int C, int Mode, class Table>
void fill_strided(Table& fn) {
    if constexpr (rounding_applies<C>(Mode)) {
        fn[C][0][0][Mode] = &strided_update<C, false, false, Mode>;
        fn[C][0][1][Mode] = &strided_update<C, false, true, Mode>;
        fn[C][1][0][Mode] = &strided_update<C, true, false, Mode>;
        fn[C][1][1][Mode] = &strided_update<C, true, true, Mode>;
    }
}

template <class T>
bool finite_run(const ArrayRef& a, const int64_t* strides, int64_t begin, int64_t end) {
    bool finite = true;
    walk_elements<1>(a.ndim, a.shape, strides, begin, end, [&](const int64_t* off) {
        finite &= is_finite_bits(at<T>(a.data, off[0]));
    });
    return finite;
}

}  // namespace

const StridedTable& strided_kernels() {
    static const auto table = [] {
        struct Table {
            StridedTable fn;
        } t{};
        for_each_combo([&](auto combo) {
            constexpr int C = decltype(combo)::value;
            fill_strided<C, round_nearest>(t.fn);
            fill_strided<C, round_kahan>(t.fn);
            fill_strided<C, round_stochastic>(t.fn);
        });
        return t;
    }();
    return table.fn;
}

bool strided_all_finite(const ArrayRef& a, const int64_t* strides, int64_t begin, int64_t end) {
    switch (a.dtype) {
        case DType::float16: return finite_run<float16>(a, strides, begin, end);
        case DType::bfloat16: return finite_run<bfloat16>(a, strides, begin, end);
        case DType::float32: return finite_run<float>(a, strides, begin, end);
        case DType::float64: return finite_run<double>(a, strides, begin, end);
    }
    return false;
}

}  // namespace adamcore::cpu

namespace adamcore::testing {

std::vector<int64_t> strided_offsets(const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& strides, int64_t begin,
                                     int64_t end) {
    if (shape.size() != strides.size() || shape.size() > 64)
        throw Error(ErrorKind::invalid_value, "shape and strides must have one length <= 64");
    std::vector<int64_t> out;
    walk_elements<1>(static_cast<int32_t>(shape.size()), shape.data(), strides.data(), begin, end,
                     [&](const int64_t* off) { out.push_back(off[0]); });
    return out;
}

}  // namespace adamcore::testing
