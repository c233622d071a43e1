// combos.h: the (param, grad) dtype pairs the kernels take, and their storage and arithmetic
// types, written once for the CPU kernels, the strided CPU loop and the CUDA kernels.
#pragma once

#include <type_traits>
#include <utility>

#include "adamcore/core.hpp"
#include "adamcore/half.h"

namespace adamcore {

// (param, grad, state) dtypes. State is float32 for 16/32-bit params and float64 for float64
// ones unless a 16-bit state dtype is asked for (lowp.h); a 16-bit param takes a grad of its own
// dtype or float32. The first six are the default state's; the CUDA kernels take those.
enum Combo : int {
    f32, f64, f16_f16, f16_f32, bf16_bf16, bf16_f32,
    f32_sbf16,                          // float32 param, bfloat16 state
    f16_f16_sf16, f16_f32_sf16,         // float16 param, float16 state
    f16_f16_sbf16, f16_f32_sbf16,       // float16 param, bfloat16 state
    bf16_bf16_sbf16, bf16_f32_sbf16,    // bfloat16 param, bfloat16 state
    combo_count
};
constexpr int default_state_combos = 6;

// The combo of a (param, grad) pair that validation accepted, with the default state.
inline int combo_of(DType param, DType grad) {
    switch (param) {
        case DType::float32: return f32;
        case DType::float64: return f64;
        case DType::float16: return grad == DType::float16 ? f16_f16 : f16_f32;
        case DType::bfloat16: return grad == DType::bfloat16 ? bf16_bf16 : bf16_f32;
    }
    return -1;
}

// The combo of a (param, grad, state) triple that validation accepted.
inline int combo_of(DType param, DType grad, DType state) {
    if (state == DType::float32 || state == DType::float64) return combo_of(param, grad);
    const bool wide_grad = grad == DType::float32;
    switch (param) {
        case DType::float32: return f32_sbf16;
        case DType::float16:
            if (state == DType::float16) return wide_grad ? f16_f32_sf16 : f16_f16_sf16;
            return wide_grad ? f16_f32_sbf16 : f16_f16_sbf16;
        case DType::bfloat16: return wide_grad ? bf16_f32_sbf16 : bf16_bf16_sbf16;
        default: return -1;
    }
}

// P: param storage, G: grad storage, S: arithmetic type, M: state storage.
template <class P_, class G_, class S_, class M_ = S_>
struct Types {
    using P = P_;
    using G = G_;
    using S = S_;
    using M = M_;
};
template <int C>
struct ComboTypes;
template <> struct ComboTypes<f32> : Types<float, float, float> {};
template <> struct ComboTypes<f64> : Types<double, double, double> {};
template <> struct ComboTypes<f16_f16> : Types<float16, float16, float> {};
template <> struct ComboTypes<f16_f32> : Types<float16, float, float> {};
template <> struct ComboTypes<bf16_bf16> : Types<bfloat16, bfloat16, float> {};
template <> struct ComboTypes<bf16_f32> : Types<bfloat16, float, float> {};
template <> struct ComboTypes<f32_sbf16> : Types<float, float, float, bfloat16> {};
template <> struct ComboTypes<f16_f16_sf16> : Types<float16, float16, float, float16> {};
template <> struct ComboTypes<f16_f32_sf16> : Types<float16, float, float, float16> {};
template <> struct ComboTypes<f16_f16_sbf16> : Types<float16, float16, float, bfloat16> {};
template <> struct ComboTypes<f16_f32_sbf16> : Types<float16, float, float, bfloat16> {};
template <> struct ComboTypes<bf16_bf16_sbf16> : Types<bfloat16, bfloat16, float, bfloat16> {};
template <> struct ComboTypes<bf16_f32_sbf16> : Types<bfloat16, float, float, bfloat16> {};

// True when rounding mode R (lowp.h: 0 nearest, 1 Kahan, 2 stochastic) applies to combo C's
// param: Kahan to 16-bit params, stochastic rounding to bfloat16 params.
template <int C>
constexpr bool rounding_applies(int rounding) {
    using P = typename ComboTypes<C>::P;
    if (rounding == 1) return std::is_same_v<P, float16> || std::is_same_v<P, bfloat16>;
    if (rounding == 2) return std::is_same_v<P, bfloat16>;
    return true;
}

// Calls fn(std::integral_constant<int, C>{}) for every combo C, so a kernel table is filled in
// one line per table rather than one per combo.
template <class Fn, int... C>
constexpr void for_combos(const Fn& fn, std::integer_sequence<int, C...>) {
    (fn(std::integral_constant<int, C>{}), ...);
}
template <class Fn>
constexpr void for_each_combo(const Fn& fn) {
    for_combos(fn, std::make_integer_sequence<int, combo_count>{});
}

}  // namespace adamcore
