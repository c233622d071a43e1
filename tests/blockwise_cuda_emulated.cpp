// blockwise_cuda_emulated.cpp: runs the 8-bit blockwise CUDA kernel (cuda/blockwise.cu) over the
// host emulation on arrays a test wrote, and writes the results back (tests/test_blockwise.py
// compares them bit for bit with the NumPy reference, itself bit-identical with the CPU kernels).
//
// in:  int64 n, int32 combo, int32 steps, steps x 8 float64 hparams (lr, beta1, beta2, eps,
//      weight_decay, max_lr, step, flags), param bytes, steps x grad bytes, m codes, v codes,
//      m absmax, v absmax.   out: param bytes, m codes, v codes, m absmax, v absmax.
#include <cstdio>
#include <vector>

#include "adamcore/blockwise.h"
#include "adamcore/combos.h"
#include "adamcore/update.h"
#include "blockwise_launch.h"

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
    for (int32_t s = 0; s < steps; ++s) {
        const Coeffs<float> c = round_coeffs<float>(make_coeffs(hps[s]));
        const cudaError_t err = cuda::detail::launch_blockwise_step(
            combo, p.data(), g.data() + s * n * gsize, mc.data(), vc.data(), ma.data(), va.data(),
            n, uses_l2(hps[s]), c, nullptr);
        if (err != cudaSuccess) return 4;
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
