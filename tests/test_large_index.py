"""Tensors past 2^31 elements on the CPU.

The index arithmetic of the CPU step (how threads split the global index space, how a range maps
to pieces of tensors, how the strided walk turns an element index into an offset) is checked with
64-bit sizes through adamcore._core._testing against Python's exact integers, without the memory
those sizes describe. A real step on a float16 parameter of 2^31 + 5 elements runs where the
machine has the memory for it (about 24 GiB) and is skipped elsewhere.
"""

import numpy as np
import pytest

import adamcore
from adamcore._core import _testing as hooks

GRANULE = 64  # cpu_step.cpp's split_granule
BIG = [0, 1, 63, 64, 65, 2**31 - 1, 2**31, 2**31 + 5, 2**32 + 3, 3 * 2**31 + 7, 2**40 + 17,
       2**62 + 11]


@pytest.mark.parametrize("total", BIG)
@pytest.mark.parametrize("threads", [2, 3, 7, 16, 64, 255])
def test_chunks_tile_the_index_space(total, threads):
    ranges = hooks.chunks(total, threads)
    if total == 0:
        assert ranges == []
        return
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    for (b0, e0), (b1, e1) in zip(ranges, ranges[1:]):
        assert e0 == b1 and b0 < e0  # contiguous, in order, never overlapping or empty
    chunk = ranges[0][1] - ranges[0][0]
    if len(ranges) > 1:
        assert chunk % GRANULE == 0  # threads never share a cache line within a tensor
        assert all(e - b == chunk for b, e in ranges[:-1])
    assert len(ranges) <= 8 * threads + 1  # a few chunks per thread, not millions


def _expected_pieces(counts, begin, end):
    out, offset = [], 0
    for i, n in enumerate(counts):
        lo, hi = max(begin, offset) - offset, min(end, offset + n) - offset
        if n and lo < hi:
            out.append((i, lo, hi))
        offset += n
    return out


@pytest.mark.parametrize("counts", [
    [2**31 + 5],
    [5, 0, 2**31 + 5, 3],
    [2**31 - 1, 1, 1, 2**31],
    [2**33, 0, 0, 7, 2**40],
    [1] * 10 + [2**32 + 1],
])
def test_pieces_of_a_range_across_tensors(counts):
    total = sum(counts)
    rng = np.random.default_rng(len(counts))
    edges = {0, total, 2**31 - 1, 2**31, 2**31 + 1, 2**32, total - 1}
    offset = 0
    for n in counts:
        edges |= {offset - 1, offset, offset + 1}
        offset += n
    edges |= {int(x) for x in rng.integers(0, total, 20)}
    edges = sorted(e for e in edges if 0 <= e <= total)
    for begin in edges:
        for end in edges:
            if begin <= end:
                assert hooks.pieces(counts, begin, end) == _expected_pieces(counts, begin, end)


@pytest.mark.parametrize("shape,strides", [
    ([2**31 + 5], [1]),
    ([2**31 + 5], [-1]),
    ([3, 2**31 + 5], [2**31 + 5, 1]),
    ([3, 2**31 + 5], [-(2**31 + 5), 1]),
    ([2**31 + 5, 3], [1, 2**31 + 5]),         # Fortran order
    ([2**16 + 1, 2**16 + 1], [2**17 + 2, 2]),  # strided in both axes
    ([5, 7, 2**30 + 3], [3 * (2**30 + 3) * 7, 3 * (2**30 + 3), -3]),
])
def test_strided_walk_offsets_past_2_31(shape, strides):
    total = int(np.prod(shape, dtype=object))
    windows = [(0, 9), (2**31 - 4, 2**31 + 4), (2**32 - 3, 2**32 + 3), (total - 9, total)]
    for begin, end in windows:
        begin, end = max(0, begin), min(total, end)
        if begin >= end:
            continue
        expected = []
        for flat in range(begin, end):
            offset, rest = 0, flat
            for extent, stride in zip(reversed(shape), reversed(strides)):
                offset += (rest % extent) * stride
                rest //= extent
            expected.append(offset)
        assert hooks.strided_offsets(shape, strides, begin, end) == expected


# ---- a real step past 2^31 elements -----------------------------------------------------------
N = 2**31 + 5
# float16 param and grad (2 + 2 bytes), float32 exp_avg and exp_avg_sq (4 + 4): 12 bytes each,
# plus working room for the checks
NEEDED = 12 * N + (1 << 30)


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _periodic(a, pattern):
    """Fills a huge 1-d array with a repeating pattern, in place and without temporaries."""
    k = len(pattern)
    whole = a.size // k * k
    a[:whole].reshape(-1, k)[...] = pattern
    a[whole:] = pattern[:a.size - whole]


@pytest.mark.skipif(_available_memory() < NEEDED,
                    reason=f"needs {NEEDED / 2**30:.0f} GiB of available memory for a float16 "
                           f"parameter of 2^31 + 5 elements with its float32 state")
def test_float16_param_of_2_31_plus_5_elements():
    pattern = np.array([-3, -2, -1, 0, 1, 2, 3], dtype=np.float16)  # period 7: not a power of 2
    p = np.full(N, 0.5, dtype=np.float16)
    g = np.empty(N, dtype=np.float16)
    _periodic(g, pattern)
    m = np.zeros(N, dtype=np.float32)
    v = np.zeros(N, dtype=np.float32)
    adamcore.adam_step(p, g, m, v, step=1, lr=1e-2)
    # the same step on the 7-element pattern gives every element's expected value
    ep, eg = np.full(7, 0.5, np.float16), pattern.copy()
    em, ev = np.zeros(7, np.float32), np.zeros(7, np.float32)
    adamcore.adam_step(ep, eg, em, ev, step=1, lr=1e-2)
    assert len(set(ep.tolist())) > 1  # the pattern shows in the result
    rows = N // 7
    chunk = 1 << 24
    for start in range(0, rows, chunk):  # compare in chunks: no 2 GiB temporaries
        stop = min(rows, start + chunk)
        for arr, want in ((p, ep), (m, em), (v, ev)):
            block = arr[start * 7:stop * 7].reshape(-1, 7)
            assert (block == want).all(), f"wrong values in rows {start}..{stop}"
    tail = N - rows * 7
    np.testing.assert_array_equal(p[rows * 7:], ep[:tail])
    np.testing.assert_array_equal(m[rows * 7:], em[:tail])


def _cuda_memory():
    try:
        import torch
    except ImportError:
        return 0
    if not torch.cuda.is_available():
        return 0
    free, _ = torch.cuda.mem_get_info()
    return free


@pytest.mark.skipif(_cuda_memory() < NEEDED,
                    reason="needs a CUDA device (torch) with about 25 GiB of free memory")
def test_float16_param_of_2_31_plus_5_elements_cuda():
    """The same step on the GPU, through whichever backend takes torch CUDA tensors."""
    import torch

    pattern = torch.tensor([-3, -2, -1, 0, 1, 2, 3], dtype=torch.float16)
    p = torch.full((N,), 0.5, dtype=torch.float16, device="cuda")
    g = torch.empty(N, dtype=torch.float16, device="cuda")
    whole = N // 7 * 7
    g[:whole].view(-1, 7)[...] = pattern.cuda()
    g[whole:] = pattern[:N - whole].cuda()
    m = torch.zeros(N, device="cuda")
    v = torch.zeros(N, device="cuda")
    adamcore.adam_step(p, g, m, v, step=1, lr=1e-2)
    torch.cuda.synchronize()
    ep, em = np.full(7, 0.5, np.float16), np.zeros(7, np.float32)
    adamcore.adam_step(ep, pattern.numpy(), em, np.zeros(7, np.float32), step=1, lr=1e-2)
    # any indexing error leaves elements at 0.5 or steps them twice: far beyond an ulp
    for arr, want in ((p, ep), (m, em)):
        want = torch.from_numpy(want).cuda()
        assert torch.allclose(arr[:whole].view(-1, 7).float(), want.float(), rtol=1e-3, atol=0)
        assert torch.allclose(arr[whole:].float(), want[:N - whole].float(), rtol=1e-3, atol=0)
