// blockwise_cuda_emulated.cpp: runs the CUDA backend's 8-bit blockwise step (its validation and
// launches, cuda/blockwise_step.cpp, over the kernel of cuda/blockwise.cu) over the host
// emulation on arrays a test wrote, and writes the results back (tests/test_blockwise.py
// compares them bit for bit with the NumPy reference, itself bit-identical with the CPU kernels).
// A step whose hparams ask for amsgrad must be refused with nothing written.
//
// in:  int64 n, int32 combo, int32 steps, steps x 8 float64 hparams (lr, beta1, beta2, eps,
//      weight_decay, max_lr, step, flags), param bytes, steps x grad bytes, m codes, v codes,
//      m absmax, v absmax.   out: param bytes, m codes, v codes, m absmax, v absmax.
#include <cstdio>
#include <cstring>
#include <vector>

#include "adam_cuda.hpp"
#include "adamcore/blockwise.h"
#include "adamcore/combos.h"
#include "adamcore/update.h"
#include "cpu_blockwise.h"

namespace {
bool read(std::FILE* f, void* dst, size_t bytes) { return std::fread(dst, 1, bytes, f) == bytes; }
}  // namespace

int main(int argc, char** argv) {
    using namespace adamcore;
    if (argc != 3) return 2;
    std::FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    int64_t n = 0;
    int32_t combo = 0, steps = 0;
    if (!read(in, &n, 8) || !read(in, &combo, 4) || !read(in, &steps, 4)) return 3;
    std::vector<adamcore_hparams> hps(steps);
    for (auto& hp : hps) {
        double h[8];
        if (!read(in, h, sizeof h)) return 3;
        hp = {h[0], h[1], h[2], h[3], h[4], h[5], static_cast<int64_t>(h[6]),
              static_cast<uint32_t>(h[7])};
    }
    const size_t psize = combo == f32 ? 4 : 2;
    const size_t gsize = (combo == f32 || combo == f16_f32 || combo == bf16_f32) ? 4 : 2;
    const int64_t blocks = quant_blocks(n);
    std::vector<unsigned char> p(n * psize), g(n * gsize * steps);
    std::vector<int8_t> mc(n);
    std::vector<uint8_t> vc(n);
    std::vector<float> ma(blocks), va(blocks);
    if (!read(in, p.data(), p.size()) || !read(in, g.data(), g.size()) ||
        !read(in, mc.data(), n) || !read(in, vc.data(), n) || !read(in, ma.data(), blocks * 4) ||
        !read(in, va.data(), blocks * 4))
        return 3;
    std::fclose(in);
    const DType pdt = combo == f32 ? DType::float32
                      : (combo == f16_f16 || combo == f16_f32) ? DType::float16 : DType::bfloat16;
    const DType gdt = gsize == 4 ? DType::float32 : pdt;
    const auto state = [&](void* data, StateType type, int64_t numel) {
        StateArray a;
        a.data = data;
        a.type = type;
        a.numel = numel;
        return a;
    };
    BlockwiseTensorRef t;
    t.param = {p.data(), pdt, 1, &n, nullptr};
    t.exp_avg = state(mc.data(), StateType::int8, n);
    t.exp_avg_sq = state(vc.data(), StateType::uint8, n);
    t.exp_avg_absmax = state(ma.data(), StateType::float32, blocks);
    t.exp_avg_sq_absmax = state(va.data(), StateType::float32, blocks);
    for (int32_t s = 0; s < steps; ++s) {
        t.grad = {g.data() + s * n * gsize, gdt, 1, &n, nullptr};
        adamcore_hparams amsgrad = hps[s];
        amsgrad.flags |= ADAMCORE_AMSGRAD;
        const std::vector<unsigned char> before(p);
        try {
            cuda::adam_step_blockwise(&t, 1, &amsgrad, 1, 0, nullptr);
            return 5;  // not refused
        } catch (const Error& e) {
            if (!std::strstr(e.what(), "amsgrad") || p != before) return 6;
        }
        try {
            cuda::adam_step_blockwise(&t, 1, &hps[s], 1, 0, nullptr);
        } catch (const Error& e) {
            std::printf("%s\n", e.what());
            return 4;
        }
    }
    std::FILE* out = std::fopen(argv[2], "wb");
    if (!out) return 2;
    std::fwrite(p.data(), 1, p.size(), out);
    std::fwrite(mc.data(), 1, n, out);
    std::fwrite(vc.data(), 1, n, out);
    std::fwrite(ma.data(), 4, blocks, out);
    std::fwrite(va.data(), 4, blocks, out);
    std::fclose(out);
    std::puts("ok");
    return 0;
}
