// combos.h: the (param, grad) dtype pairs the kernels take, and their storage and arithmetic
// types, written once for the CPU kernels, the strided CPU loop and the CUDA kernels.
#pragma once

#include <type_traits>

#include "adamcore/core.hpp"
#include "adamcore/half.h"

namespace adamcore {

// State is float32, or float64 for float64 params; a 16-bit param takes a grad of its own dtype
// or float32.
enum Combo : int { f32, f64, f16_f16, f16_f32, bf16_bf16, bf16_f32, combo_count };

// The combo of a (param, grad) pair that validation accepted.
inline int combo_of(DType param, DType grad) {
    switch (param) {
        case DType::float32: return f32;
        case DType::float64: return f64;
        case DType::float16: return grad == DType::float16 ? f16_f16 : f16_f32;
        case DType::bfloat16: return grad == DType::bfloat16 ? bf16_bf16 : bf16_f32;
    }
    return -1;
}

// P: param storage, G: grad storage, S: state and arithmetic type.
template <int C>
struct ComboTypes;
template <> struct ComboTypes<f32> { using P = float; using G = float; using S = float; };
template <> struct ComboTypes<f64> { using P = double; using G = double; using S = double; };
template <> struct ComboTypes<f16_f16> { using P = float16; using G = float16; using S = float; };
template <> struct ComboTypes<f16_f32> { using P = float16; using G = float; using S = float; };
template <> struct ComboTypes<bf16_bf16> { using P = bfloat16; using G = bfloat16; using S = float; };
template <> struct ComboTypes<bf16_f32> { using P = bfloat16; using G = float; using S = float; };

// Calls fn(std::integral_constant<int, C>{}) for every combo C, so a kernel table is filled in
// one line per table rather than one per combo.
template <class Fn>
constexpr void for_each_combo(const Fn& fn) {
    fn(std::integral_constant<int, f32>{});
    fn(std::integral_constant<int, f64>{});
    fn(std::integral_constant<int, f16_f16>{});
    fn(std::integral_constant<int, f16_f32>{});
    fn(std::integral_constant<int, bf16_bf16>{});
    fn(std::integral_constant<int, bf16_f32>{});
}

}  // namespace adamcore
