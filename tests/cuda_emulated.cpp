// cuda_emulated.cpp: the CUDA backend's kernels and planning, run on the host through
// cuda/host_emulation.h, against the CPU core bit for bit. Built and run by
// tests/test_cuda_emulated.py; prints "ok" and exits 0, or says what differs and exits 1.
//
// Every array lives in its own buffer with room around it, filled with random bytes; both
// backends get byte-identical copies, and the whole buffers must match afterwards, so a write
// outside a view (or a missed element) shows. Modes: "" (memory pools), "nopools" (plain
// cudaMalloc), "nodevice" (no GPU: every call must say so).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "adam_cuda.hpp"
#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "adamcore/half.h"
#include "host_emulation.h"

using namespace adamcore;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        std::printf("FAIL: %s\n", what.c_str());
        ++failures;
    }
}

struct Buffer {
    std::shared_ptr<unsigned char> bytes;
    size_t size;
    Buffer clone() const {
        Buffer b{std::shared_ptr<unsigned char>(static_cast<unsigned char*>(std::aligned_alloc(64, (size + 63) / 64 * 64)), std::free), size};
        std::memcpy(b.bytes.get(), bytes.get(), size);
        return b;
    }
};

// A view into a buffer: element offset of index 0, shape and strides in elements.
struct View {
    DType dtype;
    int64_t offset;
    std::vector<int64_t> shape, strides;
};

enum class Layout { c, unaligned, strided, negative, fortran, zero_d };
const char* layout_name(Layout l) {
    static const char* names[] = {"c", "unaligned", "strided", "negative", "fortran", "0-d"};
    return names[static_cast<int>(l)];
}

std::mt19937_64 rng(20261201);

// A buffer holding a view of n elements (rows x cols for 2-D layouts) in the given layout,
// every byte random, the view's elements set to values drawn by make().
Buffer make_array(DType dtype, Layout layout, int64_t rows, int64_t cols, View* view,
                  const std::function<double()>& make) {
    const int64_t n = rows * cols;
    View v{dtype, 0, {}, {}};
    int64_t elements = n + 2;
    switch (layout) {
        case Layout::c: v.shape = {rows, cols}; v.strides = {cols, 1}; break;
        case Layout::unaligned: v.offset = 1; v.shape = {n}; v.strides = {1}; break;
        case Layout::strided: v.shape = {rows, cols}; v.strides = {3 * cols, 2}; elements = 3 * n + 2; break;
        case Layout::negative: v.offset = n; v.shape = {n}; v.strides = {-1}; break;
        case Layout::fortran: v.shape = {rows, cols}; v.strides = {1, rows}; break;
        case Layout::zero_d: v.shape = {}; v.strides = {}; elements = 3; break;
    }
    const size_t esize = dtype_size(dtype);
    Buffer b{std::shared_ptr<unsigned char>(static_cast<unsigned char*>(std::aligned_alloc(64, (elements * esize + 63) / 64 * 64)), std::free),
             static_cast<size_t>(elements) * esize};
    for (size_t i = 0; i < b.size; ++i) b.bytes.get()[i] = static_cast<unsigned char>(rng());
    // write values at each logical index
    const int64_t count = layout == Layout::zero_d ? 1 : n;
    for (int64_t i = 0; i < count; ++i) {
        int64_t rest = i, off = v.offset;
        for (int d = static_cast<int>(v.shape.size()) - 1; d >= 0; --d) {
            off += rest % v.shape[d] * v.strides[d];
            rest /= v.shape[d];
        }
        const double x = make();
        unsigned char* at = b.bytes.get() + off * esize;
        switch (dtype) {
            case DType::float16: { const float16 h = narrow(static_cast<float>(x), float16{}); std::memcpy(at, &h, 2); break; }
            case DType::bfloat16: { const bfloat16 h = narrow(static_cast<float>(x), bfloat16{}); std::memcpy(at, &h, 2); break; }
            case DType::float32: { const float f = static_cast<float>(x); std::memcpy(at, &f, 4); break; }
            case DType::float64: std::memcpy(at, &x, 8); break;
        }
    }
    *view = v;
    return b;
}

ArrayRef ref(const Buffer& b, const View& v) {
    ArrayRef a;
    a.data = b.bytes.get() + v.offset * static_cast<int64_t>(dtype_size(v.dtype));
    a.dtype = v.dtype;
    a.ndim = static_cast<int32_t>(v.shape.size());
    a.shape = v.shape.data();
    a.strides = v.strides.data();
    return a;
}

// One tensor: 5 arrays (p, g, m, v, vmax) with their buffers and views, and a 6th, the
// compensation, with Kahan summation.
struct Case {
    Buffer buffers[6];
    View views[6];
    bool has_comp = false;
    uint64_t seed = 0;
    size_t set;
    Layout layout;
    int64_t rows, cols;
};

std::normal_distribution<double> normal;
std::uniform_real_distribution<double> uniform(0.0, 1.0);

Case make_case(DType param, DType grad, Layout layout, Layout grad_layout, int64_t rows,
               int64_t cols, size_t set) {
    Case c;
    const DType state = state_dtype_for(param);
    c.buffers[0] = make_array(param, layout, rows, cols, &c.views[0], [] { return normal(rng); });
    c.buffers[1] = make_array(grad, grad_layout, rows, cols, &c.views[1], [] { return normal(rng); });
    c.buffers[2] = make_array(state, layout, rows, cols, &c.views[2], [] { return 0.1 * normal(rng); });
    c.buffers[3] = make_array(state, layout, rows, cols, &c.views[3], [] { return 0.01 * uniform(rng); });
    c.buffers[4] = make_array(state, layout, rows, cols, &c.views[4], [] { return 0.02 * uniform(rng); });
    c.set = set;
    c.layout = layout;
    c.rows = rows;
    c.cols = cols;
    return c;
}

Case clone(const Case& c) {
    Case d = c;
    for (int k = 0; k < (c.has_comp ? 6 : 5); ++k) d.buffers[k] = c.buffers[k].clone();
    return d;
}

TensorRef tensor(const Case& c) {
    TensorRef t;
    t.param = ref(c.buffers[0], c.views[0]);
    t.grad = ref(c.buffers[1], c.views[1]);
    t.exp_avg = ref(c.buffers[2], c.views[2]);
    t.exp_avg_sq = ref(c.buffers[3], c.views[3]);
    t.max_exp_avg_sq = ref(c.buffers[4], c.views[4]);
    t.has_max_exp_avg_sq = true;
    t.hparams_index = c.set;
    if (c.has_comp) {
        t.compensation = ref(c.buffers[5], c.views[5]);
        t.has_compensation = true;
    }
    t.seed = c.seed;
    return t;
}

bool same_bytes(const Case& a, const Case& b) {
    for (int k = 0; k < (a.has_comp ? 6 : 5); ++k)
        if (std::memcmp(a.buffers[k].bytes.get(), b.buffers[k].bytes.get(), a.buffers[k].size) != 0)
            return false;
    return true;
}

std::vector<adamcore_hparams> hparam_sets(size_t count, int64_t step) {
    std::vector<adamcore_hparams> sets;
    for (size_t k = 0; k < count; ++k) {
        adamcore_hparams hp{};
        hp.lr = 1e-3 * static_cast<double>(k + 1);
        hp.beta1 = k % 3 == 2 ? 0.5 : 0.9;
        hp.beta2 = 0.999;
        hp.eps = k % 4 == 3 ? 1e-3 : 1e-8;
        hp.weight_decay = k % 2 ? 0.1 : 0.0;
        hp.max_lr = 3e-2;
        hp.step = step;
        const uint32_t flag_sets[] = {0u,
                                      ADAMCORE_DECOUPLED_WEIGHT_DECAY,
                                      ADAMCORE_AMSGRAD,
                                      ADAMCORE_AMSGRAD | ADAMCORE_MAXIMIZE,
                                      ADAMCORE_DECOUPLE_LR | ADAMCORE_AMSGRAD,
                                      ADAMCORE_MAXIMIZE};
        hp.flags = flag_sets[k % 6];
        sets.push_back(hp);
    }
    return sets;
}

const DType param_dtypes[] = {DType::float32, DType::float64, DType::float16, DType::bfloat16};

DType grad_for(DType param, int pick) {
    if ((param == DType::float16 || param == DType::bfloat16) && pick % 2) return DType::float32;
    return param;
}

// Many tensors of every dtype pair and layout, several steps, one-shot: against the CPU core.
void test_one_shot(size_t sets_count) {
    const Layout layouts[] = {Layout::c, Layout::unaligned, Layout::strided, Layout::negative,
                              Layout::fortran, Layout::zero_d};
    const int64_t sizes[][2] = {{1, 1}, {1, 7}, {17, 1}, {33, 31}, {1, 1023}, {4097, 1}, {65, 1009}, {0, 5}};
    std::vector<Case> cpu;
    int pick = 0;
    for (DType p : param_dtypes)
        for (Layout l : layouts)
            for (const auto& s : sizes) {
                // a grad laid out unlike its param (Fortran vs C) sends the tensor to the strided path
                const Layout gl = (pick % 7 == 3 && l == Layout::c) ? Layout::fortran : l;
                cpu.push_back(make_case(p, grad_for(p, pick), l, gl, s[0], s[1], pick % sets_count));
                ++pick;
            }
    std::vector<Case> gpu;
    for (const Case& c : cpu) gpu.push_back(clone(c));
    for (int64_t step = 1; step <= 3; ++step) {
        const auto hp = hparam_sets(sets_count, step);
        std::vector<TensorRef> tc, tg;
        for (auto& c : cpu) tc.push_back(tensor(c));
        for (auto& c : gpu) tg.push_back(tensor(c));
        cpu_adam_step(tc.data(), tc.size(), hp.data(), hp.size(), false);
        cuda::adam_step(tg.data(), tg.size(), hp.data(), hp.size(), false, 0, nullptr);
    }
    for (size_t i = 0; i < cpu.size(); ++i)
        check(same_bytes(cpu[i], gpu[i]),
              "one-shot, " + std::to_string(sets_count) + " sets: tensor " + std::to_string(i) + " (" +
                  dtype_name(cpu[i].views[0].dtype) + "/" + dtype_name(cpu[i].views[1].dtype) + ")");
}

// The low-precision modes: every (param, grad, state) combo with every rounding mode that
// applies to its param (nearest; Kahan summation for 16-bit params; stochastic rounding for
// bfloat16 ones), every layout and odd sizes, with and without amsgrad, one-shot, several steps,
// against the CPU core bit for bit (compensations and seeds included).
struct Combo3 {
    DType param, grad, state;
};
const Combo3 all_combos[] = {
    {DType::float32, DType::float32, DType::float32},    {DType::float64, DType::float64, DType::float64},
    {DType::float16, DType::float16, DType::float32},    {DType::float16, DType::float32, DType::float32},
    {DType::bfloat16, DType::bfloat16, DType::float32},  {DType::bfloat16, DType::float32, DType::float32},
    {DType::float32, DType::float32, DType::bfloat16},   {DType::float16, DType::float16, DType::float16},
    {DType::float16, DType::float32, DType::float16},    {DType::float16, DType::float16, DType::bfloat16},
    {DType::float16, DType::float32, DType::bfloat16},   {DType::bfloat16, DType::bfloat16, DType::bfloat16},
    {DType::bfloat16, DType::float32, DType::bfloat16},
};

Case make_lowp_case(const Combo3& k, Layout layout, Layout other, int64_t rows, int64_t cols,
                    size_t set, bool kahan) {
    Case c;
    c.buffers[0] = make_array(k.param, layout, rows, cols, &c.views[0], [] { return normal(rng); });
    c.buffers[1] = make_array(k.grad, layout, rows, cols, &c.views[1], [] { return normal(rng); });
    c.buffers[2] = make_array(k.state, layout, rows, cols, &c.views[2], [] { return 0.1 * normal(rng); });
    c.buffers[3] = make_array(k.state, layout, rows, cols, &c.views[3], [] { return 0.01 * uniform(rng); });
    c.buffers[4] = make_array(k.state, layout, rows, cols, &c.views[4], [] { return 0.02 * uniform(rng); });
    if (kahan) {  // the compensation, laid out as `other` (unlike the param: the strided path)
        c.buffers[5] = make_array(k.param, other, rows, cols, &c.views[5], [] { return 1e-4 * normal(rng); });
        c.has_comp = true;
    }
    c.seed = rng();
    c.set = set;
    c.layout = layout;
    c.rows = rows;
    c.cols = cols;
    return c;
}

// The hyperparameter sets of the low-precision test: rounding mode r (0 nearest, 1 Kahan,
// 2 stochastic) times amsgrad times L2 / decoupled weight decay, set = r * 4 + amsgrad * 2 + wd.
std::vector<adamcore_hparams> lowp_sets(int64_t step) {
    std::vector<adamcore_hparams> sets;
    const uint32_t modes[] = {0u, ADAMCORE_KAHAN_SUMMATION, ADAMCORE_STOCHASTIC_ROUNDING};
    for (uint32_t mode : modes)
        for (int ams = 0; ams < 2; ++ams)
            for (int wd = 0; wd < 2; ++wd) {
                adamcore_hparams hp = adamcore_hparams_default();
                hp.lr = 3e-2;  // large steps, so rounding matters
                hp.weight_decay = 0.05;
                hp.max_lr = 3e-2;
                hp.step = step;
                hp.flags = mode | (ams ? ADAMCORE_AMSGRAD : 0u) | (wd ? ADAMCORE_DECOUPLED_WEIGHT_DECAY : 0u) |
                           (step % 2 ? ADAMCORE_MAXIMIZE : 0u);
                sets.push_back(hp);
            }
    return sets;
}

void test_lowp() {
    const Layout layouts[] = {Layout::c, Layout::unaligned, Layout::strided, Layout::negative,
                              Layout::fortran, Layout::zero_d};
    const int64_t sizes[][2] = {{1, 1}, {1, 7}, {17, 1}, {33, 31}, {1, 1023}, {1, 65537}, {0, 4}};
    std::vector<Case> cpu;
    int pick = 0;
    for (const Combo3& k : all_combos) {
        const bool half = k.param == DType::float16 || k.param == DType::bfloat16;
        const bool bf = k.param == DType::bfloat16;
        for (int mode = 0; mode < 3; ++mode) {
            if ((mode == 1 && !half) || (mode == 2 && !bf)) continue;
            for (Layout l : layouts)
                for (const auto& s : sizes) {
                    if (s[1] == 65537 && l != Layout::c && l != Layout::fortran) continue;  // time
                    // now and then a compensation laid out unlike its param
                    const Layout other = (pick % 5 == 3 && l == Layout::c) ? Layout::fortran : l;
                    const size_t set = static_cast<size_t>(mode * 4 + pick % 4);
                    cpu.push_back(make_lowp_case(k, l, other, s[0], s[1], set, mode == 1));
                    ++pick;
                }
        }
    }
    std::vector<Case> gpu;
    for (const Case& c : cpu) gpu.push_back(clone(c));
    for (int64_t step = 1; step <= 3; ++step) {
        const auto hp = lowp_sets(step);
        std::vector<TensorRef> tc, tg;
        for (auto& c : cpu) tc.push_back(tensor(c));
        for (auto& c : gpu) tg.push_back(tensor(c));
        cpu_adam_step(tc.data(), tc.size(), hp.data(), hp.size(), false);
        cuda::adam_step(tg.data(), tg.size(), hp.data(), hp.size(), false, 0, nullptr);
    }
    static const char* mode_names[] = {"nearest", "kahan", "stochastic"};
    for (size_t i = 0; i < cpu.size(); ++i)
        check(same_bytes(cpu[i], gpu[i]),
              "low precision: tensor " + std::to_string(i) + " (" + dtype_name(cpu[i].views[0].dtype) + "/" +
                  dtype_name(cpu[i].views[1].dtype) + "/" + dtype_name(cpu[i].views[2].dtype) + ", " +
                  mode_names[cpu[i].set / 4] + ", " + layout_name(cpu[i].layout) + ", " +
                  std::to_string(cpu[i].rows) + "x" + std::to_string(cpu[i].cols) + ")");

    // stochastic rounding draws different bits for another seed: the test above would see a
    // kernel that ignored the seed only if the results differ, so make sure they do
    Case a = make_lowp_case(all_combos[11], Layout::c, Layout::c, 1, 4099, 8, false);
    Case b = clone(a);
    b.seed = a.seed + 1;
    const auto hp = lowp_sets(1);
    TensorRef ta = tensor(a), tb = tensor(b);
    cuda::adam_step(&ta, 1, hp.data(), hp.size(), false, 0, nullptr);
    cuda::adam_step(&tb, 1, hp.data(), hp.size(), false, 0, nullptr);
    check(std::memcmp(a.buffers[0].bytes.get(), b.buffers[0].bytes.get(), a.buffers[0].size) != 0,
          "stochastic rounding with another seed rounds some element otherwise");

    // bad combinations: refused before anything is written (the good tensor 0 stays)
    struct Bad {
        Combo3 k;
        uint32_t flags;
        bool comp;
        const char* what;
        const char* says = "1";  // the message names tensor 1 (or says what is wrong)
    } bad[] = {
        {{DType::float32, DType::float32, DType::float32}, ADAMCORE_KAHAN_SUMMATION, true, "kahan on float32"},
        {{DType::float16, DType::float16, DType::float32}, ADAMCORE_STOCHASTIC_ROUNDING, false, "stochastic rounding on float16"},
        {{DType::bfloat16, DType::bfloat16, DType::float16}, 0u, false, "bfloat16 param with float16 state"},
        {{DType::float64, DType::float64, DType::bfloat16}, 0u, false, "float64 param with bfloat16 state"},
        {{DType::bfloat16, DType::bfloat16, DType::float32}, ADAMCORE_KAHAN_SUMMATION, false, "kahan without compensation"},
        {{DType::bfloat16, DType::bfloat16, DType::float32}, ADAMCORE_KAHAN_SUMMATION | ADAMCORE_STOCHASTIC_ROUNDING, true, "kahan and stochastic rounding",
         "exclude each other"},
    };
    for (const Bad& x : bad) {
        std::vector<adamcore_hparams> sets = lowp_sets(1);
        adamcore_hparams h = adamcore_hparams_default();
        h.flags = x.flags;
        sets.push_back(h);
        Case good = make_lowp_case(all_combos[12], Layout::c, Layout::c, 3, 5, 8, false);
        Case wrong = make_lowp_case(x.k, Layout::c, Layout::c, 3, 5, sets.size() - 1, x.comp);
        Case pristine_good = clone(good), pristine_wrong = clone(wrong);
        TensorRef ts[2] = {tensor(good), tensor(wrong)};
        bool raised = false;
        try {
            cuda::adam_step(ts, 2, sets.data(), sets.size(), false, 0, nullptr);
        } catch (const Error& e) {
            raised = (e.kind() == ErrorKind::invalid_value || e.kind() == ErrorKind::invalid_dtype) &&
                     std::string(e.what()).find(x.says) != std::string::npos;
        }
        check(raised, std::string("refused: ") + x.what);
        check(same_bytes(good, pristine_good) && same_bytes(wrong, pristine_wrong),
              std::string("nothing written after refusing ") + x.what);
    }
}

// The plan: dense params and state; grads that stay, move, change layout or alignment.
void test_plan(size_t sets_count) {
    const int64_t sizes[][2] = {{1, 1}, {1, 7}, {17, 3}, {1, 4096}, {1, 4099}, {129, 65}, {0, 3}};
    std::vector<Case> cpu;
    int pick = 0;
    for (DType p : param_dtypes)
        for (const auto& s : sizes) {
            const Layout l = pick % 5 == 2 ? Layout::fortran : pick % 5 == 4 ? Layout::unaligned : Layout::c;
            cpu.push_back(make_case(p, grad_for(p, pick / 2), l, l, s[0], s[1], pick % sets_count));
            ++pick;
        }
    std::vector<Case> gpu;
    for (const Case& c : cpu) gpu.push_back(clone(c));
    std::vector<TensorRef> tg;
    for (auto& c : gpu) tg.push_back(tensor(c));
    cuda::Plan plan(tg.data(), tg.size(), 0);
    for (int64_t step = 1; step <= 6; ++step) {
        // new grads: fresh buffers on steps 1, 2, 5; the same buffers refilled on 3; a Fortran
        // layout for C params on 4 (one-shot fallback); on 6 back to the step-5 buffers
        for (size_t i = 0; i < cpu.size(); ++i) {
            Case& c = cpu[i];
            if (step == 6) continue;
            const Layout gl = step == 4 && c.layout == Layout::c ? Layout::fortran : c.layout;
            const int64_t rows = c.rows, cols = c.cols;
            Buffer b = make_array(c.views[1].dtype, gl, rows, cols, &c.views[1], [] { return normal(rng); });
            if (step == 3) {  // same buffer, new values: copy into the existing one
                std::memcpy(c.buffers[1].bytes.get(), b.bytes.get(), std::min(b.size, c.buffers[1].size));
            } else {
                c.buffers[1] = b;
            }
            gpu[i].views[1] = c.views[1];
            if (step == 3) {
                std::memcpy(gpu[i].buffers[1].bytes.get(), c.buffers[1].bytes.get(), c.buffers[1].size);
            } else {
                gpu[i].buffers[1] = c.buffers[1].clone();
            }
        }
        const auto hp = hparam_sets(sets_count, step);
        std::vector<TensorRef> tc;
        for (auto& c : cpu) tc.push_back(tensor(c));
        std::vector<ArrayRef> grads;
        for (auto& c : gpu) grads.push_back(ref(c.buffers[1], c.views[1]));
        cpu_adam_step(tc.data(), tc.size(), hp.data(), hp.size(), false);
        plan.step(grads.data(), grads.size(), hp.data(), hp.size(), false, nullptr);
        for (size_t i = 0; i < cpu.size(); ++i)
            check(same_bytes(cpu[i], gpu[i]), "plan, " + std::to_string(sets_count) + " sets, step " +
                                                  std::to_string(step) + ": tensor " + std::to_string(i));
    }
    // a plan refuses a param that is not dense
    Case strided = make_case(DType::float32, DType::float32, Layout::strided, Layout::strided, 5, 5, 0);
    TensorRef t = tensor(strided);
    bool refused = false;
    try {
        cuda::Plan bad(&t, 1, 0);
    } catch (const Error& e) {
        refused = e.kind() == ErrorKind::invalid_value;
    }
    check(refused, "a plan over a strided param is refused");
}

// Bad input: an error before anything is written.
void test_errors() {
    Case a = make_case(DType::float32, DType::float32, Layout::c, Layout::c, 4, 5, 0);
    Case b = make_case(DType::float32, DType::float32, Layout::c, Layout::c, 5, 4, 0);
    Case pristine_a = clone(a);
    TensorRef ts[2] = {tensor(a), tensor(b)};
    ts[1].grad = ref(a.buffers[1], a.views[1]);  // shape (4, 5) for a (5, 4) param
    const auto hp = hparam_sets(1, 1);
    bool raised = false;
    try {
        cuda::adam_step(ts, 2, hp.data(), 1, false, 0, nullptr);
    } catch (const Error& e) {
        raised = e.kind() == ErrorKind::invalid_value && std::string(e.what()).find("grad 1") != std::string::npos;
    }
    check(raised, "a grad of the wrong shape is an invalid_value error naming it");
    check(same_bytes(a, pristine_a), "nothing written after an error");

    // check_finite: a NaN in the second tensor's grad stops the step before any write
    Case c = make_case(DType::float32, DType::float32, Layout::c, Layout::c, 3, 1000, 0);
    Case pristine_c = clone(c);
    TensorRef tc[2] = {tensor(a), tensor(c)};
    float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(static_cast<float*>(tc[1].grad.data) + 2999, &nan, 4);
    Case pristine_a2 = clone(a);
    raised = false;
    try {
        cuda::adam_step(tc, 2, hp.data(), 1, true, 0, nullptr);
    } catch (const Error& e) {
        raised = e.kind() == ErrorKind::not_finite && std::string(e.what()).find("grad 1") != std::string::npos;
    }
    check(raised, "check_finite raises not_finite naming grad 1");
    check(same_bytes(a, pristine_a2), "check_finite wrote nothing");
    (void)pristine_c;

    // a plan takes only the default modes: a step in another is refused, nothing written
    Case h = make_case(DType::bfloat16, DType::bfloat16, Layout::c, Layout::c, 4, 5, 0);
    Case pristine_h = clone(h);
    TensorRef th = tensor(h);
    {
        cuda::Plan plan(&th, 1, 0);
        auto hp_flag = hparam_sets(1, 1);
        hp_flag[0].flags |= ADAMCORE_STOCHASTIC_ROUNDING;
        raised = false;
        try {
            plan.step(&th.grad, 1, hp_flag.data(), 1, false, nullptr);
        } catch (const Error& e) {
            raised = e.kind() == ErrorKind::unavailable &&
                     std::string(e.what()).find("param 0") != std::string::npos;
        }
        check(raised, "stochastic rounding in a CUDA plan is an unavailable error naming the param");
        check(same_bytes(h, pristine_h), "nothing written after the refusal");
    }
}

void test_first_nonfinite() {
    // float64 1e300 is finite; inf in a strided float16 view; NaN in a bfloat16 array
    View v1, v2, v3, v4;
    Buffer big = make_array(DType::float64, Layout::strided, 3, 7, &v1, [] { return 1e300; });
    Buffer fine = make_array(DType::float32, Layout::negative, 1, 5000, &v2, [] { return 1.0; });
    int k = 0;
    Buffer half = make_array(DType::float16, Layout::strided, 9, 9, &v3, [&] { return ++k == 50 ? 1e6 : 1.0; });
    Buffer bf = make_array(DType::bfloat16, Layout::c, 1, 100, &v4, [] { return 1.0; });
    const ArrayRef arrays[4] = {ref(big, v1), ref(fine, v2), ref(half, v3), ref(bf, v4)};
    check(cuda::first_nonfinite(arrays, 4, 0, nullptr) == 2, "first_nonfinite finds the float16 overflow in a strided view");
    check(cuda::first_nonfinite(arrays, 2, 0, nullptr) == -1, "1e300 in float64 is finite");
    const uint16_t bf_nan = 0x7fc1;
    std::memcpy(static_cast<char*>(arrays[3].data) + 2 * 77, &bf_nan, 2);
    const ArrayRef tail[2] = {arrays[1], arrays[3]};
    check(cuda::first_nonfinite(tail, 2, 0, nullptr) == 1, "first_nonfinite finds a bfloat16 NaN");
}

void test_probes() {
    const int64_t n = 4099;
    std::vector<float> p(n + 1), g(n + 1), m(n + 1), v(n + 1), dst(n + 1);
    for (int64_t i = 0; i <= n; ++i) {
        p[i] = static_cast<float>(i);
        g[i] = 0.5f;
        m[i] = 1.0f;
        v[i] = 2.0f;
    }
    cuda::stream_probe(p.data() + 1, g.data() + 1, m.data() + 1, v.data() + 1, n - 1, 0, nullptr);  // unaligned
    cuda::stream_probe(p.data(), g.data(), m.data(), v.data(), 1, 0, nullptr);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) ok &= p[i] == static_cast<float>(i) + 0.5f && m[i] == 1.5f && v[i] == 2.5f;
    ok &= p[n] == static_cast<float>(n);  // past the end: untouched
    check(ok, "stream_probe adds g to p, m and v");
    cuda::copy(dst.data(), p.data(), n, 0, nullptr);
    check(std::memcmp(dst.data(), p.data(), n * 4) == 0 && dst[n] == 0.0f, "copy");
}

// The C ABI's CUDA entry points (c_api_cuda.cpp built with the backend) against its CPU ones.
void test_c_abi() {
    check(adamcore_cuda_available() == 1, "adamcore_cuda_available");
    const int64_t sizes[3] = {5, 4096, 7001};
    std::vector<std::vector<float>> host[5], dev[5];
    for (int k = 0; k < 5; ++k)
        for (int64_t n : sizes) {
            std::vector<float> x(static_cast<size_t>(n));
            for (float& e : x) e = static_cast<float>(k == 3 || k == 4 ? 0.01 * uniform(rng) : normal(rng));
            host[k].push_back(x);
            dev[k].push_back(x);
        }
    adamcore_hparams hp = adamcore_hparams_default();
    hp.flags = ADAMCORE_AMSGRAD | ADAMCORE_DECOUPLED_WEIGHT_DECAY;
    hp.weight_decay = 0.1;
    hp.step = 3;
    // single tensor
    check(adamcore_cuda_adam_step_f32(dev[0][0].data(), dev[1][0].data(), dev[2][0].data(),
                                      dev[3][0].data(), dev[4][0].data(), sizes[0], &hp, nullptr) == 0,
          std::string("adamcore_cuda_adam_step_f32: ") + adamcore_last_error());
    check(adamcore_adam_step_f32(host[0][0].data(), host[1][0].data(), host[2][0].data(),
                                 host[3][0].data(), host[4][0].data(), sizes[0], &hp) == 0,
          "adamcore_adam_step_f32");
    // multi-tensor
    float* tables[2][5][3];
    for (int k = 0; k < 5; ++k)
        for (int i = 0; i < 3; ++i) {
            tables[0][k][i] = host[k][i].data();
            tables[1][k][i] = dev[k][i].data();
        }
    check(adamcore_cuda_adam_step_multi_f32(tables[1][0], tables[1][1], tables[1][2], tables[1][3],
                                            tables[1][4], sizes, 3, &hp, nullptr) == 0,
          std::string("adamcore_cuda_adam_step_multi_f32: ") + adamcore_last_error());
    check(adamcore_adam_step_multi_f32(tables[0][0], tables[0][1], tables[0][2], tables[0][3],
                                       tables[0][4], sizes, 3, &hp) == 0,
          "adamcore_adam_step_multi_f32");
    bool same = true;
    for (int k = 0; k < 5; ++k)
        for (int i = 0; i < 3; ++i) same &= host[k][i] == dev[k][i];
    check(same, "the C ABI's CUDA entry points equal its CPU ones");
    // errors: NULL grad, then a missing max_exp_avg_sq with amsgrad, nothing written
    const std::vector<float> before = dev[0][1];
    check(adamcore_cuda_adam_step_f32(dev[0][1].data(), nullptr, dev[2][1].data(), dev[3][1].data(),
                                      dev[4][1].data(), sizes[1], &hp, nullptr) == ADAMCORE_ERROR_INVALID_VALUE &&
              std::string(adamcore_last_error()).find("grad is NULL") != std::string::npos,
          "a NULL grad is an invalid value");
    check(adamcore_cuda_adam_step_multi_f32(tables[1][0], tables[1][1], tables[1][2], tables[1][3],
                                            nullptr, sizes, 3, &hp, nullptr) == ADAMCORE_ERROR_INVALID_VALUE,
          "amsgrad without max_exp_avg_sqs is an invalid value");
    check(dev[0][1] == before, "nothing written after a C ABI error");

    // adamcore_cuda_adam_step_tensors against adamcore_adam_step_tensors: bfloat16 params with
    // Kahan summation, then stochastic rounding, and float16 state
    const int64_t n = 1031;
    auto bits = [](float x) { return narrow(x, bfloat16{}); };
    std::vector<bfloat16> arrays[2][6];  // cpu, cuda x p, g, m, v, vmax, comp
    for (int k = 0; k < 6; ++k) {
        for (int64_t i = 0; i < n; ++i)
            arrays[0][k].push_back(bits(static_cast<float>(k == 3 || k == 4 ? 0.01 * uniform(rng)
                                                           : k == 5 ? 1e-4 * normal(rng) : normal(rng))));
        arrays[1][k] = arrays[0][k];
    }
    for (uint32_t mode : {ADAMCORE_KAHAN_SUMMATION, ADAMCORE_STOCHASTIC_ROUNDING}) {
        adamcore_hparams h = adamcore_hparams_default();
        h.lr = 3e-2;
        h.step = 2;
        h.flags = mode | ADAMCORE_AMSGRAD;
        adamcore_tensor t[2] = {};
        for (int b = 0; b < 2; ++b) {
            t[b] = adamcore_tensor{arrays[b][0].data(), arrays[b][1].data(), arrays[b][2].data(),
                                   arrays[b][3].data(), arrays[b][4].data(),
                                   mode == ADAMCORE_KAHAN_SUMMATION ? arrays[b][5].data() : nullptr,
                                   n, 77, ADAMCORE_BFLOAT16, ADAMCORE_BFLOAT16, ADAMCORE_BFLOAT16, 0};
        }
        check(adamcore_adam_step_tensors(&t[0], 1, &h) == 0, std::string("adamcore_adam_step_tensors: ") + adamcore_last_error());
        check(adamcore_cuda_adam_step_tensors(&t[1], 1, &h, nullptr) == 0,
              std::string("adamcore_cuda_adam_step_tensors: ") + adamcore_last_error());
    }
    bool equal = true;
    for (int k = 0; k < 6; ++k)
        equal &= std::memcmp(arrays[0][k].data(), arrays[1][k].data(), n * sizeof(bfloat16)) == 0;
    check(equal, "adamcore_cuda_adam_step_tensors equals adamcore_adam_step_tensors");
    // Kahan without a compensation: refused, naming it, nothing written
    adamcore_hparams h = adamcore_hparams_default();
    h.flags = ADAMCORE_KAHAN_SUMMATION;
    adamcore_tensor t = {arrays[1][0].data(), arrays[1][1].data(), arrays[1][2].data(), arrays[1][3].data(),
                         nullptr, nullptr, n, 0, ADAMCORE_BFLOAT16, ADAMCORE_BFLOAT16, ADAMCORE_FLOAT32, 0};
    const std::vector<bfloat16> p_before = arrays[1][0];
    t.state_dtype = ADAMCORE_BFLOAT16;
    check(adamcore_cuda_adam_step_tensors(&t, 1, &h, nullptr) == ADAMCORE_ERROR_INVALID_VALUE &&
              std::string(adamcore_last_error()).find("compensation") != std::string::npos,
          std::string("Kahan without a compensation is refused: ") + adamcore_last_error());
    check(std::memcmp(arrays[1][0].data(), p_before.data(), n * sizeof(bfloat16)) == 0, "nothing written after refusing a missing compensation");
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "nodevice") {
        adamcore_emulation::device_count = 0;
        check(cuda::device_count() == 0, "no device counted");
        check(cuda::unavailable_reason().find("no CUDA device") != std::string::npos, "reason says no device");
        bool raised = false;
        try {
            cuda::adam_step(nullptr, 0, nullptr, 0, false, 0, nullptr);
        } catch (const Error& e) {
            raised = e.kind() == ErrorKind::unavailable;
        }
        check(raised, "a step without a device is an unavailable error");
        float x[4] = {0};
        adamcore_hparams hp = adamcore_hparams_default();
        check(adamcore_cuda_available() == 0, "adamcore_cuda_available is 0 without a device");
        check(adamcore_cuda_adam_step_f32(x, x, x, x, nullptr, 4, &hp, nullptr) == ADAMCORE_ERROR_UNAVAILABLE &&
                  std::string(adamcore_last_error()).find("no CUDA device") != std::string::npos,
              "the C ABI says no device");
        adamcore_tensor t = {x, x, x, x, nullptr, nullptr, 4, 0, ADAMCORE_FLOAT32, ADAMCORE_FLOAT32, ADAMCORE_FLOAT32, 0};
        check(adamcore_cuda_adam_step_tensors(&t, 1, &hp, nullptr) == ADAMCORE_ERROR_UNAVAILABLE,
              "adamcore_cuda_adam_step_tensors says no device");
    } else {
        if (mode == "nopools") adamcore_emulation::memory_pools = 0;
        check(cuda::device_count() == 1 && cuda::unavailable_reason().empty(), "one emulated device");
        // without memory pools only the allocation calls differ: one pass is enough
        const std::vector<size_t> set_counts = mode == "nopools" ? std::vector<size_t>{20}
                                                                 : std::vector<size_t>{1, 6, 20};
        for (size_t sets : set_counts) {
            test_one_shot(sets);
            test_plan(sets);
        }
        test_lowp();
        test_errors();
        test_first_nonfinite();
        test_probes();
        test_c_abi();
        check(adamcore_emulation::live_allocations == 0,
              "every device allocation freed (" + std::to_string(adamcore_emulation::live_allocations) + " left)");
    }
    if (failures) return 1;
    std::printf("ok\n");
    return 0;
}
