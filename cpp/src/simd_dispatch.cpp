// simd_dispatch.cpp: which SIMD level's kernels run, chosen once at run time from the CPU.
//
// Order of preference: ADAMCORE_SIMD (environment) if it names a supported level, else the widest
// level this CPU runs. set_simd_level() switches at any time (tests use it to run every level).
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "adamcore/core.hpp"
#include "cpu_kernels.h"

namespace adamcore {
namespace {

struct Level {
    const char* name;
    const cpu::KernelTable* table;
    bool (*supported)();
};

#if defined(__x86_64__) || defined(_M_X64)
bool has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
bool has_avx512() {
    __builtin_cpu_init();
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif
bool always() { return true; }

// Widest first. The baseline is SSE2 on x86-64 and NEON on aarch64 (both part of the ISA).
const std::vector<Level>& levels() {
    static const std::vector<Level> all = {
#if defined(ADAMCORE_HAVE_AVX512)
        {"avx512", &cpu::avx512_kernels, &has_avx512},
#endif
#if defined(ADAMCORE_HAVE_AVX2)
        {"avx2", &cpu::avx2_kernels, &has_avx2},
#endif
        {"baseline", &cpu::baseline_kernels, &always},
    };
    return all;
}

const Level* find_supported(const std::string& name) {
    for (const Level& level : levels())
        if ((name.empty() || name == level.name) && level.supported()) return &level;
    return nullptr;
}

const Level* initial_level() {
    const char* env = std::getenv("ADAMCORE_SIMD");
    if (env && *env) {
        if (const Level* level = find_supported(env)) return level;
    }
    return find_supported("");
}

std::atomic<const Level*>& active() {
    static std::atomic<const Level*> level{initial_level()};
    return level;
}

}  // namespace

namespace cpu {
const KernelTable& active_kernels() { return *active().load(std::memory_order_relaxed)->table; }
}  // namespace cpu

std::vector<std::string> compiled_simd_levels() {
    std::vector<std::string> names;
    for (const Level& level : levels()) names.emplace_back(level.name);
    return names;
}

std::vector<std::string> supported_simd_levels() {
    std::vector<std::string> names;
    for (const Level& level : levels())
        if (level.supported()) names.emplace_back(level.name);
    return names;
}

std::string simd_level() { return active().load()->name; }

void set_simd_level(const std::string& name) {
    const Level* level = find_supported(name);
    if (!level) {
        std::string known;
        for (const std::string& n : supported_simd_levels()) known += (known.empty() ? "" : ", ") + n;
        throw Error(ErrorKind::invalid_value, "SIMD level '" + name +
                                                  "' is not compiled in or not supported by this "
                                                  "CPU; available: " + known);
    }
    active().store(level);
}

}  // namespace adamcore
