// core_module.cpp: adamcore._core, the nanobind binding of the CPU core.
//
// Arrays arrive through DLPack as untyped nb::ndarray, so nanobind never converts them; every
// argument the core writes is also .noconvert(), so no call can quietly update a temporary copy.
// The GIL is released while the kernels run.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "binding_common.hpp"
#include "blockwise_binding.hpp"
#include "numpy_layout.hpp"
#include "steady_watch.hpp"
#include "../src/cpu_step_testing.h"
#include "../src/cpu_norm.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace adamcore {
namespace {

using namespace binding;

template <class A>
ArrayRef array_ref(const A& a, const char* role, size_t index) {
    require_cpu(a, role, index);
    return array_ref_of(a, role, index);
}

// The arrays a step writes (params and state), imported once and held. An optimizer keeps one
// between steps, so a step imports only its grads.
class CpuPlan {
public:
    CpuPlan(std::vector<Array> params, std::vector<Array> exp_avgs, std::vector<Array> exp_avg_sqs,
            std::vector<std::optional<Array>> max_exp_avg_sqs, std::vector<size_t> hparams_index,
            std::vector<std::optional<Array>> compensations = {}, std::vector<uint64_t> seeds = {})
        : held_(std::move(params), std::move(exp_avgs), std::move(exp_avg_sqs),
                std::move(max_exp_avg_sqs), std::move(hparams_index), std::move(compensations),
                std::move(seeds)),
          tensors_(held_.tensors([](const auto& a, const char* role, size_t i) {
              return array_ref(a, role, i);
          })) {
        for (const TensorRef& t : tensors_) param_dims_ += static_cast<size_t>(t.param.ndim);
    }

    void step(const std::vector<ReadOnlyArray>& grads, const std::vector<HParamsTuple>& hparams,
              bool check_finite) {
        check_count(grads.size(), tensors_.size(), "grads");
        run(grads, to_hparams(hparams), check_finite);
    }

    // The steady step of adamcore.Adam over NumPy params in one call (adamcore/_steady.py).
    // watch(): the objects it checks, and the claims list (adamcore/_memory.py) with this plan's
    // addresses; watch_groups(): the groups, the values their hyperparameters were built from,
    // those hyperparameters and the groups' step counts.
    void watch(const nb::list& params, const nb::list& keys, const nb::list& dicts,
               const nb::list& array_keys, const nb::list& arrays, const nb::str& step_key,
               const nb::list& claims, const nb::handle& claimed) {
        SteadyWatch watch(params, keys, dicts, array_keys, arrays, step_key);
        check_count(watch.size(), tensors_.size(), "watched params");
        watch_.emplace(std::move(watch));
        claims_ = claims;
        claimed_ = nb::borrow(claimed);
    }

    void watch_groups(const std::vector<size_t>& indices, const nb::list& groups,
                      const nb::tuple& keys, const nb::list& values, nb::handle absent,
                      const std::vector<HParamsTuple>& hparams, const std::vector<int64_t>& steps) {
        groups_.emplace(indices, groups, keys, values, absent, to_hparams(hparams), steps);
    }

    // 1 having stepped, where the params, their state dicts, arrays and step counters are those
    // watched, each param still has the layout imported, each grad is a NumPy array and the
    // groups are unchanged (or `hparams` is given: the Python side built them); then the
    // counters advance. 0 having written nothing where any of that changed; -1 having written
    // nothing where only a group's values changed (the caller builds hparams and calls again).
    // The claim and the core's checks of grads and hyperparameters raise, before any write.
    int steady_step(nb::handle params, nb::handle state, nb::handle grads, nb::handle groups,
                    const std::optional<std::vector<HParamsTuple>>& hparams, bool check_finite) {
        if (!watch_ || !groups_) throw Error(ErrorKind::internal, "steady_step() before watch()");
        Py_ssize_t n = 0;
        PyObject** grad_items = sequence_items(grads.ptr(), &n);
        if (grad_items == nullptr || static_cast<size_t>(n) != tensors_.size()) return 0;
        for (Py_ssize_t i = 0; i < n; ++i) prefetch(grad_items[i]);
        std::vector<adamcore_hparams> next;
        if (hparams) {
            next = to_hparams(*hparams);
            check_count(next.size(), groups_->size(), "hparams");
        } else {
            if (!groups_->unchanged(groups)) return -1;
            next = groups_->next();
        }
        if (!watch_->unchanged(params, state)) return 0;
        PyObject** param_items = sequence_items(params.ptr(), &n);  // checked by unchanged()
        // the grads, held while the GIL is released (another thread may empty their list)
        std::vector<nb::object> held(tensors_.size());
        std::vector<ReadOnlyArray> imported;  // those NumPy's fields do not describe directly
        std::vector<ArrayRef> grad_refs(tensors_.size());
        std::vector<int64_t> grad_shapes;  // the grads' shapes, copied (numpy_grad_ref)
        grad_shapes.reserve(param_dims_);  // a grad of another rank takes nanobind's import
        for (size_t i = 0; i < tensors_.size(); ++i) {
            if (!numpy_pair_holds(i, param_items[i], grad_items[i])) return 0;
            held[i] = nb::borrow(grad_items[i]);
            if (numpy_grad_ref(grad_items[i], grad_refs[i], grad_shapes)) continue;
            if (imported.empty()) imported.reserve(tensors_.size());  // no reallocation below
            if (!nb::try_cast(nb::handle(grad_items[i]), imported.emplace_back(), false))
                return 0;
            grad_refs[i] = array_ref(imported.back(), "grad", i);
        }
        claim(claims_, claimed_, "step()");
        struct Release {
            const nb::list& claims;
            nb::handle addresses;
            ~Release() { release_quietly(claims, addresses); }
        } release{claims_, claimed_};
        watch_->advance();  // before the kernel evicts the dicts from the caches; undone if it raises
        try {
            run(grad_refs, next, check_finite);
        } catch (...) {
            watch_->undo();
            throw;
        }
        groups_->advance();
        return 1;
    }

    std::vector<int64_t> group_steps() const {
        if (!groups_) throw Error(ErrorKind::internal, "group_steps() before watch_groups()");
        return groups_->steps();
    }

    // True while every param is still a writeable NumPy array over the memory, shape, strides
    // and dtype this plan imported (NumPy lets a caller change the shape, strides and flags of
    // an array in place), and every grad is a NumPy array: the steady path's check of a step's
    // arrays, one call for all of them (the core checks the grads' shapes and dtypes).
    bool holds(const nb::list& params, const nb::list& grads) const {
        if (params.size() != tensors_.size() || grads.size() != tensors_.size()) return false;
        for (size_t i = 0; i < tensors_.size(); ++i)
            if (!numpy_pair_holds(i, params[i].ptr(), grads[i].ptr())) return false;
        return true;
    }

    size_t size() const { return tensors_.size(); }

private:
    // param i still a writeable NumPy array as imported, its grad a NumPy array (holds and
    // steady_step; the core checks the grad's shape and dtype)
    bool numpy_pair_holds(size_t i, PyObject* param, PyObject* grad) const {
        return numpy_matches(param, tensors_[i].param) && PyObject_TypeCheck(grad, ndarray_type());
    }

    void run(const std::vector<ReadOnlyArray>& grads, const std::vector<adamcore_hparams>& hparams,
             bool check_finite) {
        std::vector<ArrayRef> refs(grads.size());
        for (size_t i = 0; i < grads.size(); ++i) refs[i] = array_ref(grads[i], "grad", i);
        run(refs, hparams, check_finite);
    }

    void run(const std::vector<ArrayRef>& grads, const std::vector<adamcore_hparams>& hparams,
             bool check_finite) {
        struct Unset {  // the grads are not held past the call, whatever happens in it
            std::vector<TensorRef>& tensors;
            ~Unset() { for (TensorRef& t : tensors) t.grad = ArrayRef{}; }
        } unset{tensors_};
        for (size_t i = 0; i < grads.size(); ++i) tensors_[i].grad = grads[i];
        nb::gil_scoped_release release;
        cpu_adam_step(tensors_.data(), tensors_.size(), hparams.data(), hparams.size(),
                      check_finite);
    }

    HeldArrays held_;
    std::vector<TensorRef> tensors_;
    size_t param_dims_ = 0;  // the params' ranks summed: room for the grads' shapes
    // steady_step's Python objects (set by watch and watch_groups), and its claim
    std::optional<SteadyWatch> watch_;
    std::optional<GroupWatch> groups_;
    nb::list claims_;
    nb::object claimed_;
};

void adam_step(std::vector<Array> params, const std::vector<ReadOnlyArray>& grads,
               std::vector<Array> exp_avgs, std::vector<Array> exp_avg_sqs,
               std::vector<std::optional<Array>> max_exp_avg_sqs, std::vector<size_t> hparams_index,
               const std::vector<HParamsTuple>& hparams, bool check_finite,
               std::vector<std::optional<Array>> compensations, std::vector<uint64_t> seeds) {
    CpuPlan plan(std::move(params), std::move(exp_avgs), std::move(exp_avg_sqs),
                 std::move(max_exp_avg_sqs), std::move(hparams_index), std::move(compensations),
                 std::move(seeds));
    plan.step(grads, hparams, check_finite);
}

int64_t first_nonfinite(const std::vector<ReadOnlyArray>& arrays) {
    std::vector<ArrayRef> refs(arrays.size());
    for (size_t i = 0; i < arrays.size(); ++i) refs[i] = array_ref(arrays[i], "array", i);
    nb::gil_scoped_release release;
    return cpu_first_nonfinite(refs.data(), refs.size());
}

// clip_grad_norm's native path (cpu_norm.cpp): any float dtype, any strides.
double total_norm(const std::vector<ReadOnlyArray>& arrays, double ord) {
    std::vector<ArrayRef> refs(arrays.size());
    for (size_t i = 0; i < arrays.size(); ++i) refs[i] = array_ref(arrays[i], "grad", i);
    nb::gil_scoped_release release;
    return cpu_total_norm(refs.data(), refs.size(), ord);
}

void scale(const std::vector<Array>& arrays, double factor) {
    std::vector<ArrayRef> refs(arrays.size());
    for (size_t i = 0; i < arrays.size(); ++i) refs[i] = array_ref(arrays[i], "grad", i);
    nb::gil_scoped_release release;
    cpu_scale(refs.data(), refs.size(), factor);
}

// The steady plan's checks over the optimizer's state dicts (adamcore/_steady.py), at C speed:
// in Python each lookup costs ~70 ns, 300 of them a fifth of a 100-tensor step on two threads.
// True where every dict is a dict whose entries under keys are, in order, the objects expected.
bool same_items(const nb::list& dicts, const nb::tuple& keys, const nb::list& expected) {
    const size_t n = dicts.size(), k = keys.size();
    if (expected.size() != n * k) return false;
    for (size_t i = 0; i < n; ++i) {
        PyObject* d = dicts[i].ptr();
        if (!PyDict_Check(d)) return false;
        for (size_t j = 0; j < k; ++j) {
            PyObject* value = dict_lookup(d, keys[j].ptr());
            if (value == nullptr || value != expected[i * k + j].ptr()) return false;
        }
    }
    return true;
}

// d[key] += 1 for every dict, each value a Python int (the step counters of adamcore.Adam);
// returns the new values (the objects now in the dicts, for same_items to compare).
nb::list increment(const nb::list& dicts, const nb::str& key) {
    nb::list out;
    for (nb::handle d : dicts) {
        PyObject* value = PyDict_Check(d.ptr()) ? PyDict_GetItemWithError(d.ptr(), key.ptr())
                                                : nullptr;
        if (value == nullptr) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "step");
            throw nb::python_error();
        }
        nb::object next = nb::steal(PyNumber_Add(value, nb::int_(1).ptr()));
        if (!next.is_valid() || PyDict_SetItem(d.ptr(), key.ptr(), next.ptr()) != 0)
            throw nb::python_error();
        out.append(next);
    }
    return out;
}

using Contiguous = nb::ndarray<float, nb::c_contig, nb::device::cpu>;
using ReadOnlyContiguous = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;

void require_same_size(size_t a, size_t b) {
    if (a != b) throw Error(ErrorKind::invalid_value, "the probe's arrays differ in size");
}

}  // namespace
}  // namespace adamcore

NB_MODULE(_core, m) {
    using namespace adamcore;
    m.doc() = "adamcore's CPU core: one Adam/AdamW step over many arrays, SIMD and threaded.";

    binding::register_error_translator();

    m.attr("DECOUPLED_WEIGHT_DECAY") = ADAMCORE_DECOUPLED_WEIGHT_DECAY;
    m.attr("DECOUPLE_LR") = ADAMCORE_DECOUPLE_LR;
    m.attr("AMSGRAD") = ADAMCORE_AMSGRAD;
    m.attr("MAXIMIZE") = ADAMCORE_MAXIMIZE;
    m.attr("KAHAN_SUMMATION") = ADAMCORE_KAHAN_SUMMATION;
    m.attr("STOCHASTIC_ROUNDING") = ADAMCORE_STOCHASTIC_ROUNDING;
    m.attr("version") = adamcore_version();
#if defined(_OPENMP)
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif

    nb::class_<CpuPlan>(m, "CpuPlan",
                        "The params and state of a step, imported once; step() takes the grads.")
        .def(nb::init<std::vector<Array>, std::vector<Array>, std::vector<Array>,
                      std::vector<std::optional<Array>>, std::vector<size_t>,
                      std::vector<std::optional<Array>>, std::vector<uint64_t>>(),
             "params"_a.noconvert(), "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(),
             "max_exp_avg_sqs"_a.noconvert(), "hparams_index"_a,
             "compensations"_a.noconvert() = std::vector<std::optional<Array>>{},
             "seeds"_a = std::vector<uint64_t>{})
        .def("step", &CpuPlan::step, "grads"_a.noconvert(), "hparams"_a, "check_finite"_a = false)
        .def("holds", &CpuPlan::holds, "params"_a, "grads"_a,
             "Whether each param is still a writeable NumPy array over the memory, shape, "
             "strides and dtype imported, and each grad a NumPy array.")
        .def("watch", &CpuPlan::watch, "params"_a, "keys"_a, "dicts"_a, "array_keys"_a,
             "arrays"_a, "step_key"_a, "claims"_a, "claimed"_a,
             "The Python objects steady_step checks: the param objects, their keys in the "
             "state mapping, their state dicts, per param the state arrays' keys, the arrays "
             "(param after param), the step counter's key; and the claims list with this "
             "plan's addresses.")
        .def("watch_groups", &CpuPlan::watch_groups, "indices"_a, "groups"_a, "keys"_a,
             "values"_a, "absent"_a, "hparams"_a, "steps"_a,
             "The groups steady_step checks (each at its index in the front end's list), the "
             "values under keys their hparams were built from (absent: a key the group lacked), "
             "those hparams and the groups' step counts.")
        .def("steady_step", &CpuPlan::steady_step, "params"_a, "state"_a, "grads"_a,
             "groups"_a, "hparams"_a.none(), "check_finite"_a = false,
             "One step where everything watched is unchanged: 1 (the counters advance); 0 "
             "having written nothing where something changed, -1 where only a group's values "
             "did (pass hparams).")
        .def("group_steps", &CpuPlan::group_steps, "Each watched group's step count.")
        .def("__len__", &CpuPlan::size);

    m.def("adam_step", &adam_step, "params"_a.noconvert(), "grads"_a.noconvert(),
          "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(),
          "max_exp_avg_sqs"_a.noconvert(), "hparams_index"_a, "hparams"_a,
          "check_finite"_a = false,
          "compensations"_a.noconvert() = std::vector<std::optional<Array>>{},
          "seeds"_a = std::vector<uint64_t>{},
          "One step over all tensors: validates everything, then updates in place. "
          "max_exp_avg_sqs may be empty, or hold None for tensors without amsgrad; "
          "hparams_index (one per tensor, or empty for all 0) selects each tensor's hparams, "
          "a tuple (lr, beta1, beta2, eps, weight_decay, max_lr, step, flags). "
          "State arrays may be float32 (float64 params: float64), the param's dtype or bfloat16. "
          "compensations (Kahan summation's buffers, the params' dtypes; None for tensors "
          "without) and seeds (stochastic rounding's per-tensor seeds) may be empty.");

    m.def("bfloat16_view", &binding::bfloat16_view, "uint16_array"_a,
          "The memory of a NumPy uint16 array (an ml_dtypes bfloat16 array's .view(numpy.uint16)) "
          "as a DLPack capsule of dtype bfloat16: no copy, same strides; the capsule does not "
          "carry a read-only flag, so check writeability first.");
    binding::register_blockwise(m);

    nb::module_ steady = m.def_submodule("_steady", "The steady plan's checks of state dicts.");
    steady.def("same_items", &same_items, "dicts"_a, "keys"_a, "expected"_a,
               "Whether the entries under keys of every dict are, in order, the expected objects.");
    steady.def("claim", &claim, "claims"_a, "addresses"_a, "who"_a,
               "Appends addresses (a frozenset) to claims, or raises RuntimeError where a set "
               "there shares one; atomic under the GIL.");
    steady.def("release", &release, "claims"_a, "addresses"_a,
               "Removes that set (or an equal one) from claims.");
    steady.def("increment", &increment, "dicts"_a, "key"_a, "d[key] += 1 for every dict; returns the new values.");

    m.def("first_nonfinite", &first_nonfinite, "arrays"_a.noconvert(),
          "Index of the first array holding inf or NaN, or -1 when all are finite.");

    m.def("total_norm", &total_norm, "arrays"_a.noconvert(), "ord"_a,
          "The ord-norm of all arrays together (inf: max |x|), accumulated in float64.");
    m.def("scale", &scale, "arrays"_a.noconvert(), "factor"_a,
          "Multiplies every array by factor in place.");

    m.def("get_num_threads", &get_num_threads);
    m.def("set_num_threads", &set_num_threads, "n"_a);
    m.def("compiled_simd_levels", &compiled_simd_levels);
    m.def("supported_simd_levels", &supported_simd_levels);
    m.def("simd_level", &simd_level);
    m.def("set_simd_level", &set_simd_level, "name"_a);

    m.def("stream_probe",
          [](Contiguous p, ReadOnlyContiguous g, Contiguous mo, Contiguous v) {
              require_same_size(p.size(), g.size());
              require_same_size(p.size(), mo.size());
              require_same_size(p.size(), v.size());
              nb::gil_scoped_release release;
              cpu_stream_probe(p.data(), g.data(), mo.data(), v.data(),
                               static_cast<int64_t>(p.size()));
          },
          "p"_a.noconvert(), "g"_a.noconvert(), "m"_a.noconvert(), "v"_a.noconvert(),
          "Roofline probe: the step's memory traffic (4 read, 3 written) with trivial arithmetic.");
    m.def("copy",
          [](Contiguous dst, ReadOnlyContiguous src) {
              require_same_size(dst.size(), src.size());
              nb::gil_scoped_release release;
              cpu_copy(dst.data(), src.data(), static_cast<int64_t>(dst.size()));
          },
          "dst"_a.noconvert(), "src"_a.noconvert(), "Threaded copy, for the bench's roofline.");

    // Test hooks: the CPU step's index arithmetic with any 64-bit sizes (tests/test_large_index.py).
    nb::module_ hooks = m.def_submodule("_testing", "Index arithmetic of the CPU step, for tests.");
    hooks.def("chunks", &testing::chunks, "total"_a, "threads"_a);
    hooks.def("pieces", &testing::pieces, "counts"_a, "begin"_a, "end"_a);
    hooks.def("strided_offsets", &testing::strided_offsets, "shape"_a, "strides"_a, "begin"_a,
                "end"_a);
}
