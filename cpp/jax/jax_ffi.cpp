// jax_ffi.cpp: adamcore._jax_ffi, the Adam step as an XLA FFI custom call over the CPU core.
//
// One call steps every tensor of a pytree in one parallel region of the core (threads, SIMD
// dispatch), like adamcore._core's adam_step. Signature of the target "adamcore_adam_step":
//   args: lr     float32 or float64 [S..., 3]: the learning rate as an unevaluated sum of three
//                floats, so a float64 value reaches the core exactly also without jax_enable_x64
//         step   int32 or int64 [S...]: the 1-based update index t
//         then per tensor: param, grad, exp_avg, exp_avg_sq (, max_exp_avg_sq with amsgrad)
//   rets: per tensor: param, exp_avg, exp_avg_sq (, max_exp_avg_sq), aliased to those inputs
//   attrs: beta1, beta2, eps, weight_decay, max_lr (f64), flags (i64, adamcore.h's ADAMCORE_*)
// S is empty, or the batch shape vmap (vmap_method="broadcast_all") put in front of every array:
// then each batch element is a slice of every tensor with its own lr and step (one hparams entry
// each, still one call of the core).
#include <nanobind/nanobind.h>

#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "xla/ffi/api/ffi.h"

#if defined(ADAMCORE_JAX_CUDA)
#include <cuda_runtime_api.h>

#include "adam_cuda.hpp"
#endif

namespace ffi = xla::ffi;
namespace nb = nanobind;

namespace adamcore::jax_ffi {
namespace {

const char* ffi_dtype_name(ffi::DataType t) {
    switch (t) {
        case ffi::DataType::F16: return "float16";
        case ffi::DataType::BF16: return "bfloat16";
        case ffi::DataType::F32: return "float32";
        case ffi::DataType::F64: return "float64";
        case ffi::DataType::S32: return "int32";
        case ffi::DataType::S64: return "int64";
        default: return "a non-float type";
    }
}

DType dtype_of(ffi::DataType t, const char* role, size_t index) {
    switch (t) {
        case ffi::DataType::F16: return DType::float16;
        case ffi::DataType::BF16: return DType::bfloat16;
        case ffi::DataType::F32: return DType::float32;
        case ffi::DataType::F64: return DType::float64;
        default: break;
    }
    throw Error(ErrorKind::invalid_dtype, std::string(role) + " " + std::to_string(index) +
                                              " has dtype " + ffi_dtype_name(t) +
                                              "; adamcore takes float16, bfloat16, float32 or "
                                              "float64");
}

// The batch shape S of a call: lr is S + (3,), step is S.
struct Batch {
    int32_t rank = 0;
    int64_t size = 1;
};

Batch batch_of(const ffi::AnyBuffer& lr, const ffi::AnyBuffer& step) {
    const auto ld = lr.dimensions();
    const auto sd = step.dimensions();
    if (ld.size() != sd.size() + 1 || ld.back() != 3)
        throw Error(ErrorKind::invalid_value, "lr must have the step's shape plus a last axis of 3");
    Batch b;
    b.rank = static_cast<int32_t>(sd.size());
    for (size_t d = 0; d < sd.size(); ++d) {
        if (ld[d] != sd[d]) throw Error(ErrorKind::invalid_value, "lr and step differ in batch shape");
        b.size *= sd[d];
    }
    return b;
}

double lr_at(const ffi::AnyBuffer& lr, int64_t b) {
    switch (lr.element_type()) {
        case ffi::DataType::F32: {
            const float* x = static_cast<const float*>(lr.untyped_data()) + 3 * b;
            return (static_cast<double>(x[0]) + static_cast<double>(x[1])) + static_cast<double>(x[2]);
        }
        case ffi::DataType::F64: {
            const double* x = static_cast<const double*>(lr.untyped_data()) + 3 * b;
            return (x[0] + x[1]) + x[2];
        }
        default:
            throw Error(ErrorKind::invalid_dtype, std::string("lr has dtype ") +
                                                      ffi_dtype_name(lr.element_type()) +
                                                      "; it must be float32 or float64");
    }
}

int64_t step_at(const ffi::AnyBuffer& step, int64_t b) {
    switch (step.element_type()) {
        case ffi::DataType::S32: return static_cast<const int32_t*>(step.untyped_data())[b];
        case ffi::DataType::S64: return static_cast<const int64_t*>(step.untyped_data())[b];
        default:
            throw Error(ErrorKind::invalid_dtype, std::string("step has dtype ") +
                                                      ffi_dtype_name(step.element_type()) +
                                                      "; it must be int32 or int64");
    }
}

// A view of one batch element (slice b of the leading batch dims) of an XLA buffer, row-major.
ArrayRef slice_ref(const ffi::AnyBuffer& buf, const Batch& batch, int64_t b, const char* role,
                   size_t index) {
    const auto dims = buf.dimensions();
    if (static_cast<int32_t>(dims.size()) < batch.rank)
        throw Error(ErrorKind::invalid_value, std::string(role) + " " + std::to_string(index) +
                                                  " lacks the batch dimensions of lr and step");
    ArrayRef ref;
    ref.dtype = dtype_of(buf.element_type(), role, index);
    ref.ndim = static_cast<int32_t>(dims.size()) - batch.rank;
    ref.shape = dims.begin() + batch.rank;
    ref.strides = nullptr;
    const int64_t per_slice = static_cast<int64_t>(buf.element_count()) / batch.size;
    ref.data = static_cast<char*>(buf.untyped_data()) +
               b * per_slice * static_cast<int64_t>(dtype_size(ref.dtype));
    return ref;
}

// The host's copy of the lr and step buffers (on the CPU, the buffers themselves).
struct Scalars {
    const ffi::AnyBuffer& lr;
    const ffi::AnyBuffer& step;
};

// Copy(dst, src, bytes) fills an output XLA did not alias; Step(tensors, n, hparams, k) runs the core.
template <class Copy, class Step>
void step_impl(const ffi::AnyBuffer& lr_dev, const ffi::AnyBuffer& step_dev, const Scalars& host,
               const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
               const adamcore_hparams& fixed, const Copy& copy, const Step& run) {
    const ffi::AnyBuffer& lr = host.lr;
    const ffi::AnyBuffer& step = host.step;
    (void)lr_dev;
    (void)step_dev;
    const bool amsgrad = fixed.flags & ADAMCORE_AMSGRAD;
    const size_t per_in = amsgrad ? 5 : 4, per_out = amsgrad ? 4 : 3;
    if (args.size() % per_in != 0 || rets.size() != args.size() / per_in * per_out)
        throw Error(ErrorKind::invalid_value, "adamcore_adam_step: the number of arrays does not "
                                              "match the tensors and the amsgrad flag");
    const size_t count = args.size() / per_in;
    const Batch batch = batch_of(lr, step);

    std::vector<adamcore_hparams> hparams(static_cast<size_t>(batch.size), fixed);
    for (int64_t b = 0; b < batch.size; ++b) {
        hparams[b].lr = lr_at(lr, b);
        hparams[b].step = step_at(step, b);
        if (!(fixed.flags & ADAMCORE_DECOUPLE_LR)) hparams[b].max_lr = hparams[b].lr;
    }

    // Outputs aliased to their inputs are updated where they are; should XLA hand an output
    // buffer of its own, the input is copied there first, so an input is never written.
    static const size_t in_of_out[4] = {0, 2, 3, 4};
    std::vector<ffi::AnyBuffer> ins, outs;
    ins.reserve(args.size());
    outs.reserve(rets.size());
    for (size_t k = 0; k < args.size(); ++k) {
        auto a = args.get<ffi::AnyBuffer>(k);
        if (!a) throw Error(ErrorKind::internal, "adamcore_adam_step: argument is not a buffer");
        ins.push_back(*a);
    }
    for (size_t k = 0; k < rets.size(); ++k) {
        auto r = rets.get<ffi::AnyBuffer>(k);
        if (!r) throw Error(ErrorKind::internal, "adamcore_adam_step: result is not a buffer");
        outs.push_back(**r);
    }
    for (size_t i = 0; i < count; ++i)
        for (size_t j = 0; j < per_out; ++j) {
            const ffi::AnyBuffer& in = ins[i * per_in + in_of_out[j]];
            const ffi::AnyBuffer& out = outs[i * per_out + j];
            if (in.element_type() != out.element_type() || in.size_bytes() != out.size_bytes())
                throw Error(ErrorKind::internal, "adamcore_adam_step: a result differs from its input");
            if (out.untyped_data() != in.untyped_data() && in.size_bytes() != 0)
                copy(out.untyped_data(), in.untyped_data(), in.size_bytes());
        }

    std::vector<TensorRef> tensors(count * static_cast<size_t>(batch.size));
    for (size_t i = 0; i < count; ++i) {
        const ffi::AnyBuffer* in = &ins[i * per_in];
        const ffi::AnyBuffer* out = &outs[i * per_out];
        for (int64_t b = 0; b < batch.size; ++b) {
            TensorRef& t = tensors[i * batch.size + b];
            t.param = slice_ref(out[0], batch, b, "param", i);
            t.grad = slice_ref(in[1], batch, b, "grad", i);
            t.exp_avg = slice_ref(out[1], batch, b, "exp_avg", i);
            t.exp_avg_sq = slice_ref(out[2], batch, b, "exp_avg_sq", i);
            if (amsgrad) {
                t.max_exp_avg_sq = slice_ref(out[3], batch, b, "max_exp_avg_sq", i);
                t.has_max_exp_avg_sq = true;
            }
            t.hparams_index = static_cast<size_t>(b);
        }
    }
    run(tensors.data(), tensors.size(), hparams.data(), hparams.size());
}

adamcore_hparams fixed_hparams(double beta1, double beta2, double eps, double weight_decay,
                               double max_lr, int64_t flags) {
    adamcore_hparams fixed = adamcore_hparams_default();
    fixed.beta1 = beta1;
    fixed.beta2 = beta2;
    fixed.eps = eps;
    fixed.weight_decay = weight_decay;
    fixed.max_lr = max_lr;
    fixed.flags = static_cast<uint32_t>(flags);
    return fixed;
}

template <class Body>
ffi::Error as_ffi_error(const Body& body) {
    try {
        body();
    } catch (const Error& e) {
        const bool internal = e.kind() == ErrorKind::internal || e.kind() == ErrorKind::cuda;
        return ffi::Error(internal ? ffi::ErrorCode::kInternal : ffi::ErrorCode::kInvalidArgument,
                          e.what());
    } catch (const std::exception& e) {
        return ffi::Error(ffi::ErrorCode::kInternal, e.what());
    }
    return ffi::Error::Success();
}

ffi::Error adam_step_cpu(ffi::AnyBuffer lr, ffi::AnyBuffer step, ffi::RemainingArgs args,
                         ffi::RemainingRets rets, double beta1, double beta2, double eps,
                         double weight_decay, double max_lr, int64_t flags) {
    const adamcore_hparams fixed = fixed_hparams(beta1, beta2, eps, weight_decay, max_lr, flags);
    return as_ffi_error([&] {
        step_impl(lr, step, Scalars{lr, step}, args, rets, fixed,
                  [](void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); },
                  [](const TensorRef* t, size_t n, const adamcore_hparams* hp, size_t k) {
                      cpu_adam_step(t, n, hp, k, false);
                  });
    });
}

#if defined(ADAMCORE_JAX_CUDA)
// A host copy of a small device buffer (lr, step), read on XLA's stream. The CUDA kernels take
// their hyperparameters from the host, so this waits for the stream once per step.
struct HostCopy {
    std::vector<char> bytes;
    XLA_FFI_Buffer buffer;
    HostCopy(const ffi::AnyBuffer& dev, const XLA_FFI_Buffer* raw, cudaStream_t stream)
        : bytes(dev.size_bytes()), buffer(*raw) {
        if (!bytes.empty()) {
            check(cudaMemcpyAsync(bytes.data(), dev.untyped_data(), bytes.size(),
                                  cudaMemcpyDeviceToHost, stream));
            check(cudaStreamSynchronize(stream));
        }
        buffer.data = bytes.data();
    }
    static void check(cudaError_t e) {
        if (e != cudaSuccess) throw Error(ErrorKind::cuda, cudaGetErrorString(e));
    }
};

ffi::Error adam_step_cuda(cudaStream_t stream, int32_t device, ffi::AnyBuffer lr,
                          ffi::AnyBuffer step, ffi::RemainingArgs args, ffi::RemainingRets rets,
                          double beta1, double beta2, double eps, double weight_decay,
                          double max_lr, int64_t flags) {
    const adamcore_hparams fixed = fixed_hparams(beta1, beta2, eps, weight_decay, max_lr, flags);
    return as_ffi_error([&] {
        // AnyBuffer keeps the XLA_FFI_Buffer it was made from; a copy with host data reads alike
        XLA_FFI_Buffer lr_raw{XLA_FFI_Buffer_STRUCT_SIZE, nullptr,
                              static_cast<XLA_FFI_DataType>(lr.element_type()), lr.untyped_data(),
                              static_cast<int64_t>(lr.dimensions().size()),
                              const_cast<int64_t*>(lr.dimensions().begin())};
        XLA_FFI_Buffer step_raw{XLA_FFI_Buffer_STRUCT_SIZE, nullptr,
                                static_cast<XLA_FFI_DataType>(step.element_type()),
                                step.untyped_data(), static_cast<int64_t>(step.dimensions().size()),
                                const_cast<int64_t*>(step.dimensions().begin())};
        HostCopy lr_host(lr, &lr_raw, stream), step_host(step, &step_raw, stream);
        const ffi::AnyBuffer lr_h(&lr_host.buffer), step_h(&step_host.buffer);
        step_impl(lr, step, Scalars{lr_h, step_h}, args, rets, fixed,
                  [&](void* dst, const void* src, size_t bytes) {
                      HostCopy::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                                      stream));
                  },
                  [&](const TensorRef* t, size_t n, const adamcore_hparams* hp, size_t k) {
                      cuda::adam_step(t, n, hp, k, false, device, stream);
                  });
    });
}
#endif

}  // namespace
}  // namespace adamcore::jax_ffi

namespace {
// The operands and attributes of both handlers, after their platform's context: lr, step, then
// every tensor's arrays, and the hyperparameters that are not traced.
template <class Binding>
auto step_operands(Binding binding) {
    return std::move(binding).template Arg<ffi::AnyBuffer>()  // lr
        .template Arg<ffi::AnyBuffer>()                       // step
        .RemainingArgs()
        .RemainingRets()
        .template Attr<double>("beta1")
        .template Attr<double>("beta2")
        .template Attr<double>("eps")
        .template Attr<double>("weight_decay")
        .template Attr<double>("max_lr")
        .template Attr<int64_t>("flags");
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(adamcore_jax_adam_step_cpu, adamcore::jax_ffi::adam_step_cpu,
                              step_operands(ffi::Ffi::Bind()));

#if defined(ADAMCORE_JAX_CUDA)
XLA_FFI_DEFINE_HANDLER_SYMBOL(adamcore_jax_adam_step_cuda, adamcore::jax_ffi::adam_step_cuda,
                              step_operands(ffi::Ffi::Bind()
                                                .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                                .Ctx<ffi::DeviceOrdinal>()));
#endif

NB_MODULE(_jax_ffi, m) {
    m.doc() = "adamcore's XLA FFI handlers (the Adam step over the CPU core), as PyCapsules.";
    m.def("registrations", []() {
        nb::dict targets;
        targets["adamcore_adam_step"] =
            nb::capsule(reinterpret_cast<void*>(adamcore_jax_adam_step_cpu));
        return targets;
    }, "{target name: PyCapsule of the CPU handler}, for jax.ffi.register_ffi_target.");
    m.def("cuda_registrations", []() {
        nb::dict targets;
#if defined(ADAMCORE_JAX_CUDA)
        targets["adamcore_adam_step"] =
            nb::capsule(reinterpret_cast<void*>(adamcore_jax_adam_step_cuda));
#endif
        return targets;
    }, "The CUDA handlers (platform 'CUDA'); empty where the CUDA backend was not built.");
}
