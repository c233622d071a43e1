"""The workloads of `python -m adamcore bench` (docs/performance.md): sizes, counts, dtypes, threads

A case is one shape of one Adam step. Every implementation of a case gets the same parameters and
gradients (shared arrays, so a 64M case fits in memory with a dozen implementations) and keeps its
own optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass

M = 1 << 20

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "fp32", "float64": "fp64"}


# Low-precision modes of a case (docs/update.md): the optimizer keywords each one adds.
LOWP = {"": {}, "kahan": {"kahan_summation": True}, "sr": {"stochastic_rounding": True},
        "bf16 state": {"state_dtype": "bfloat16"},
        "kahan bf16 state": {"kahan_summation": True, "state_dtype": "bfloat16"}}


def step_bytes(param: str, grad: str, state: str, state_buffers: int = 2,
               compensation: bool = False) -> int:
    """Bytes one element of a step must move: p, g and each state buffer read; p and the state
    buffers written. fp32 Adam: 4 + 4 + 8 read, 4 + 8 written = 28 (docs/performance.md).
    Kahan summation reads and writes a compensation of the param's dtype as well."""
    p, g, s = ITEMSIZE[param], ITEMSIZE[grad], ITEMSIZE[state]
    return 2 * p + g + 2 * state_buffers * s + (2 * p if compensation else 0)


@dataclass(frozen=True)
class Case:
    device: str                   # "cpu", "cuda", or "jax" (JAX on its CPU backend)
    sizes: tuple[int, ...]        # elements of each tensor
    dtype: str = "float32"        # the parameters' dtype
    grad_dtype: str = "float32"
    threads: int | None = None    # CPU threads (None on a GPU)
    lowp: str = ""                # a low-precision mode, a key of LOWP

    @property
    def elements(self) -> int:
        return sum(self.sizes)

    @property
    def tensors(self) -> int:
        return len(self.sizes)

    @property
    def state_dtype(self) -> str:
        """adamcore's state dtype: float32 for 16-bit params (docs/update.md), or the mode's."""
        if "bf16 state" in self.lowp:
            return "bfloat16"
        return "float32" if ITEMSIZE[self.dtype] == 2 else self.dtype

    @property
    def options(self) -> dict:
        """The optimizer keywords of the case's low-precision mode."""
        return LOWP[self.lowp]

    @property
    def name(self) -> str:
        size = _size_text(self.elements)
        shape = size if self.tensors == 1 else (
            f"{self.tensors}x{_size_text(self.sizes[0])}" if len(set(self.sizes)) == 1
            else f"{size} in {self.tensors}")
        dtype = SHORT[self.dtype] + ("" if self.grad_dtype == self.dtype
                                     else f"/{SHORT[self.grad_dtype]} grad")
        threads = "" if self.threads is None else (
            f", {self.threads} thread" + ("s" if self.threads > 1 else ""))
        mode = f" {self.lowp}" if self.lowp else ""
        return f"{self.device} {dtype}{mode} {shape}{threads}"


def _size_text(n: int) -> str:
    if n % M == 0:
        return f"{n // M}M"
    if n % 1024 == 0 and n < M:
        return f"{n // 1024}K" if n >= 65536 else str(n)
    return str(n)


def _split(total: int, count: int) -> tuple[int, ...]:
    """count tensor sizes summing to total (the first ones one element larger)."""
    base, extra = divmod(total, count)
    return tuple(base + (i < extra) for i in range(count))


def default_cases(device: str, quick: bool, cores: int) -> list[Case]:
    """The cases of docs/performance.md for one device. --quick: small sizes, under a minute."""
    if device == "cpu":
        # 1-thread cases (docs/performance.md's anchors) and the same with all threads, if more
        one, all_ = 1, cores
        fp32 = [((4096,), all_), ((M,), one), ((M,), all_), (_split(M, 100), one),
                (_split(M, 100), all_), ((16 * M,), all_), (_split(16 * M, 100), all_),
                ((64 * M,), one), ((64 * M,), all_)]
        half = [((M,), one), ((16 * M,), all_)]
        if quick:
            fp32 = [((4096,), all_), ((64 * 1024,), one), (_split(64 * 1024, 10), one), ((M,), all_)]
            half = [((64 * 1024,), one)]
        cases = [Case("cpu", sizes, threads=t) for sizes, t in fp32]
        cases += [Case("cpu", sizes, d, d, threads=t) for d in ("bfloat16", "float16")
                  for sizes, t in half]
        # the low-precision modes on bfloat16 params (float32 grads, as mixed precision has)
        cases += [Case("cpu", sizes, "bfloat16", "float32", threads=t, lowp=mode)
                  for mode in ("", "kahan", "sr", "bf16 state", "kahan bf16 state")
                  for sizes, t in half]
        unique = []
        for c in cases:  # on one core, "all threads" is "1 thread"
            if c not in unique:
                unique.append(c)
        return unique
    if device == "jax":
        return _jax_cases(quick, cores)
    if device == "cuda":
        if quick:
            return [Case("cuda", (M,)), Case("cuda", (16 * M,)), Case("cuda", _split(16 * M, 200)),
                    Case("cuda", (4096,) * 100)]
        return [Case("cuda", (4096,)), Case("cuda", (M,)), Case("cuda", (16 * M,)),
                Case("cuda", (64 * M,)), Case("cuda", (128 * M,)),
                Case("cuda", _split(16 * M, 200)), Case("cuda", (4096,) * 1000),
                Case("cuda", (16 * M,), "bfloat16", "bfloat16"),
                Case("cuda", (16 * M,), "float16", "float16")]
    raise ValueError(f"unknown device {device!r}")


def _jax_cases(quick: bool, cores: int) -> list[Case]:
    """adamcore.optax against optax.adam, both through jax.jit on JAX's CPU backend
    (bench/jax_peers.py): one tensor and 64, at 1M and 64M elements, all threads."""
    totals = (64 * 1024,) if quick else (M, 64 * M)
    return [Case("jax", sizes, threads=cores) for total in totals
            for sizes in ((total,), _split(total, 64 if not quick else 8))]


def _wanted(patterns: list[str] | None) -> list[str]:
    return [p.strip().lower() for p in patterns or () if p.strip()]


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """The cases whose name contains any of the patterns, ignoring case (all without patterns)."""
    wanted = _wanted(patterns)
    if not wanted:
        return cases
    return [c for c in cases if any(p in c.name.lower() for p in wanted)]


def unmatched(cases: list[Case], patterns: list[str] | None) -> list[str]:
    """The patterns that match no case's name."""
    return [p for p in _wanted(patterns) if not any(p in c.name.lower() for c in cases)]
