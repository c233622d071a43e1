// runtime.h: the CUDA runtime API, or its host emulation (host_emulation.h) when the backend is
// compiled as plain C++ for the tests without a GPU (tests/test_cuda_emulated.py).
#pragma once

#if defined(ADAMCORE_CUDA_EMULATION)
#include "host_emulation.h"
#else
#include <cuda_runtime.h>
// kernel<<<grid, block, 0, stream>>>, spelled so that host emulation can run it too
#define ADAMCORE_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif
