// cuda_module.cpp: adamcore._cuda, the nanobind binding of the CUDA backend.
//
// Arrays arrive through DLPack as nb::ndarray restricted to CUDA memory (nanobind never copies
// them; everything written is .noconvert()). nanobind knows nothing of streams, so every call
// takes the caller's stream as an int (a cudaStream_t; 0 is the legacy default stream). The GIL
// is released while the backend validates and enqueues; nothing here waits for the GPU except
// the finite check, which needs its answer.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adam_cuda.hpp"
#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "../../cpp/python/binding_common.hpp"
#include "../../cpp/python/blockwise_binding.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace adamcore {
namespace {

using namespace binding;

std::string device_text(int type, int id) {
    if (type == nb::device::cuda::value) return "cuda:" + std::to_string(id);
    if (type == nb::device::cpu::value) return "cpu";
    if (type == nb::device::cuda_host::value) return "cuda_host (pinned host memory)";
    if (type == nb::device::cuda_managed::value) return "cuda_managed:" + std::to_string(id);
    return "DLPack device type " + std::to_string(type);
}

// Collects the arrays of one call, checking that all are CUDA memory of one device.
class Importer {
public:
    template <class A>
    ArrayRef add(const A& a, const char* role, size_t index) {
        check(a, role, index);
        return array_ref_of(a, role, index);
    }
    // The device checks alone (state arrays of any dtype).
    template <class A>
    void check(const A& a, const char* role, size_t index) {
        const int type = a.device_type(), id = a.device_id();
        if (type != nb::device::cuda::value && type != nb::device::cuda_managed::value)
            throw Error(ErrorKind::invalid_value,
                        std::string(role) + " " + std::to_string(index) + " is on " +
                            device_text(type, id) + "; the CUDA backend takes CUDA device arrays only");
        if (device_ < 0) {
            device_ = id;
            first_ = std::string(role) + " " + std::to_string(index);
        } else if (id != device_) {
            throw Error(ErrorKind::invalid_value,
                        std::string(role) + " " + std::to_string(index) + " is on cuda:" +
                            std::to_string(id) + " but " + first_ + " is on cuda:" +
                            std::to_string(device_) + "; one step takes one device");
        }
    }
    // As callables for import_tensors and import_blockwise.
    auto adder() {
        return [this](const auto& a, const char* role, size_t i) { return add(a, role, i); };
    }
    auto checker() {
        return [this](const auto& a, const char* role, size_t i) { check(a, role, i); };
    }
    // The device of the call (0 when it has no arrays).
    int device() const { return device_ < 0 ? 0 : device_; }
    bool any() const { return device_ >= 0; }
    void expect(int device, const std::string& what) {
        device_ = device;
        first_ = what;
    }

private:
    int device_ = -1;
    std::string first_;
};


void* stream_ptr(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

// Params and state imported once; the tensors' table lives on the device between steps.
class CudaPlan {
public:
    CudaPlan(std::vector<Array> params, std::vector<Array> exp_avgs, std::vector<Array> exp_avg_sqs,
             std::vector<std::optional<Array>> max_exp_avg_sqs, std::vector<size_t> hparams_index)
        : held_(std::move(params), std::move(exp_avgs), std::move(exp_avg_sqs),
                std::move(max_exp_avg_sqs), std::move(hparams_index)) {
        const std::vector<TensorRef> tensors = held_.tensors(importer_.adder());
        device_ = importer_.device();
        plan_ = std::make_unique<cuda::Plan>(tensors.data(), tensors.size(), device_);
    }

    void step(const std::vector<ReadOnlyArray>& grads, const std::vector<HParamsTuple>& hparams_in,
              bool check_finite, uintptr_t stream) {
        check_count(grads.size(), plan_->size(), "grads");
        Importer importer;
        if (!held_.params.empty()) importer.expect(device_, "param 0");
        std::vector<ArrayRef> refs(grads.size());
        for (size_t i = 0; i < grads.size(); ++i) refs[i] = importer.add(grads[i], "grad", i);
        const std::vector<adamcore_hparams> hparams = to_hparams(hparams_in);
        nb::gil_scoped_release release;
        plan_->step(refs.data(), refs.size(), hparams.data(), hparams.size(), check_finite,
                    stream_ptr(stream));
    }

    size_t size() const { return plan_->size(); }
    int device() const { return device_; }

private:
    HeldArrays held_;
    Importer importer_;
    int device_ = 0;
    std::unique_ptr<cuda::Plan> plan_;
};

void adam_step(std::vector<Array> params, const std::vector<ReadOnlyArray>& grads,
               std::vector<Array> exp_avgs, std::vector<Array> exp_avg_sqs,
               std::vector<std::optional<Array>> max_exp_avg_sqs, std::vector<size_t> hparams_index,
               const std::vector<HParamsTuple>& hparams_in, bool check_finite, uintptr_t stream,
               const std::vector<std::optional<Array>>& compensations,
               const std::vector<uint64_t>& seeds) {
    const size_t n = params.size();
    check_count(grads.size(), n, "grads");
    check_plan_counts(n, exp_avgs.size(), exp_avg_sqs.size(), max_exp_avg_sqs.size(),
                      hparams_index.size());
    if (!compensations.empty()) check_count(compensations.size(), n, "compensations");
    if (!seeds.empty()) check_count(seeds.size(), n, "seeds");
    Importer importer;
    const std::vector<TensorRef> tensors =
        import_tensors(params, &grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, hparams_index,
                       importer.adder(), &compensations, &seeds);
    const std::vector<adamcore_hparams> hparams = to_hparams(hparams_in);
    nb::gil_scoped_release release;
    cuda::adam_step(tensors.data(), n, hparams.data(), hparams.size(), check_finite,
                    importer.device(), stream_ptr(stream));
}

void step_blockwise(const std::vector<Array>& params, const std::vector<ReadOnlyArray>& grads,
                         const std::vector<Array>& exp_avgs, const std::vector<Array>& exp_avg_sqs,
                         const std::vector<Array>& exp_avg_absmaxes,
                         const std::vector<Array>& exp_avg_sq_absmaxes,
                         const std::vector<size_t>& hparams_index,
                         const std::vector<HParamsTuple>& hparams_in, uintptr_t stream,
                         bool validate_only) {
    Importer importer;
    std::vector<std::string> names;
    const std::vector<BlockwiseTensorRef> tensors =
        import_blockwise(params, grads, exp_avgs, exp_avg_sqs, exp_avg_absmaxes,
                         exp_avg_sq_absmaxes, hparams_index, importer.adder(), importer.checker(),
                         names);
    const std::vector<adamcore_hparams> hparams = to_hparams(hparams_in);
    nb::gil_scoped_release release;
    if (validate_only)
        validate_blockwise_step(tensors.data(), tensors.size(), hparams.data(), hparams.size());
    else
        cuda::adam_step_blockwise(tensors.data(), tensors.size(), hparams.data(), hparams.size(),
                                  importer.device(), stream_ptr(stream));
}

int64_t first_nonfinite(const std::vector<ReadOnlyArray>& arrays, uintptr_t stream) {
    Importer importer;
    std::vector<ArrayRef> refs(arrays.size());
    for (size_t i = 0; i < arrays.size(); ++i) refs[i] = importer.add(arrays[i], "array", i);
    if (!importer.any()) return -1;
    nb::gil_scoped_release release;
    return cuda::first_nonfinite(refs.data(), refs.size(), importer.device(), stream_ptr(stream));
}

// The bench's probes: contiguous float32 CUDA arrays of one size.
using Contiguous = nb::ndarray<float, nb::c_contig, nb::device::cuda>;
using ReadOnlyContiguous = nb::ndarray<const float, nb::c_contig, nb::device::cuda>;

int probe_device(std::initializer_list<std::pair<size_t, int>> arrays) {
    size_t size = 0;
    int device = -1;
    for (const auto& [n, id] : arrays) {
        if (device < 0) {
            size = n;
            device = id;
        }
        if (n != size) throw Error(ErrorKind::invalid_value, "the probe's arrays differ in size");
        if (id != device) throw Error(ErrorKind::invalid_value, "the probe's arrays are on different devices");
    }
    return device;
}

}  // namespace
}  // namespace adamcore

NB_MODULE(_cuda, m) {
    using namespace adamcore;
    m.doc() = "adamcore's CUDA backend: one Adam/AdamW step over many CUDA arrays, on a given stream.";

    binding::register_error_translator();

    m.attr("version") = ADAMCORE_VERSION;  // the C ABI version this module was built with

    m.def("device_count", &cuda::device_count, "CUDA devices seen (0 without a driver or a GPU).");
    m.def("unavailable_reason", &cuda::unavailable_reason,
          "Why the backend cannot run here, or '' when it can.");
    m.def("runtime_version", &cuda::runtime_version,
          "The CUDA runtime of this build (static), as 1000 * major + 10 * minor.");
    m.def("driver_version", &cuda::driver_version,
          "The CUDA version the driver supports (0 without a driver).");
    m.def("devices", [] {
        std::vector<std::tuple<int, std::string, std::tuple<int, int>, size_t, int>> out;
        for (const cuda::DeviceInfo& d : cuda::devices())
            out.emplace_back(d.index, d.name, std::make_tuple(d.major, d.minor), d.total_memory,
                             d.multiprocessors);
        return out;
    }, "(index, name, (major, minor), total memory in bytes, multiprocessors) of each device.");

    nb::class_<CudaPlan>(m, "CudaPlan",
                         "The params and state of repeated steps, with their device table cached.")
        .def(nb::init<std::vector<Array>, std::vector<Array>, std::vector<Array>,
                      std::vector<std::optional<Array>>, std::vector<size_t>>(),
             "params"_a.noconvert(), "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(),
             "max_exp_avg_sqs"_a.noconvert(), "hparams_index"_a)
        .def("step", &CudaPlan::step, "grads"_a.noconvert(), "hparams"_a, "check_finite"_a,
             "stream"_a)
        .def_prop_ro("device", &CudaPlan::device)
        .def("__len__", &CudaPlan::size);

    m.def("adam_step", &adam_step, "params"_a.noconvert(), "grads"_a.noconvert(),
          "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(), "max_exp_avg_sqs"_a.noconvert(),
          "hparams_index"_a, "hparams"_a, "check_finite"_a, "stream"_a,
          "compensations"_a.noconvert() = std::vector<std::optional<Array>>{},
          "seeds"_a = std::vector<uint64_t>{},
          "One step over all tensors (CUDA arrays of one device), enqueued on stream: validates "
          "everything, then launches; returns without waiting for the GPU. Arguments as "
          "adamcore._core.adam_step (state dtypes, compensations and seeds included), plus the "
          "stream (a cudaStream_t as int, 0 the default).");

    m.def("adam_step_blockwise", &step_blockwise, "params"_a.noconvert(),
          "grads"_a.noconvert(), "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(),
          "exp_avg_absmaxes"_a.noconvert(), "exp_avg_sq_absmaxes"_a.noconvert(),
          "hparams_index"_a, "hparams"_a, "stream"_a, "validate_only"_a = false,
          "One step over 8-bit block-quantized state (CUDA arrays of one device), enqueued on "
          "stream: arguments as adamcore._core.adam_step_blockwise (the finite check is the "
          "caller's: first_nonfinite); validates everything, then launches one kernel per "
          "tensor and returns without waiting (validate_only: validates, launches nothing).");

    m.def("first_nonfinite", &first_nonfinite, "arrays"_a.noconvert(), "stream"_a,
          "Index of the first array holding inf or NaN, or -1; waits for the check on stream.");

    m.def("stream_probe",
          [](Contiguous p, ReadOnlyContiguous g, Contiguous mo, Contiguous v, uintptr_t stream) {
              const int device = probe_device({{p.size(), p.device_id()}, {g.size(), g.device_id()},
                                               {mo.size(), mo.device_id()}, {v.size(), v.device_id()}});
              nb::gil_scoped_release release;
              cuda::stream_probe(p.data(), g.data(), mo.data(), v.data(),
                                 static_cast<int64_t>(p.size()), device, stream_ptr(stream));
          },
          "p"_a.noconvert(), "g"_a.noconvert(), "m"_a.noconvert(), "v"_a.noconvert(), "stream"_a = 0,
          "Roofline probe: the step's memory traffic (4 read, 3 written) with trivial arithmetic.");
    m.def("copy",
          [](Contiguous dst, ReadOnlyContiguous src, uintptr_t stream) {
              const int device = probe_device({{dst.size(), dst.device_id()}, {src.size(), src.device_id()}});
              nb::gil_scoped_release release;
              cuda::copy(dst.data(), src.data(), static_cast<int64_t>(dst.size()), device,
                         stream_ptr(stream));
          },
          "dst"_a.noconvert(), "src"_a.noconvert(), "stream"_a = 0,
          "Device copy kernel, for the bench's roofline.");
}
