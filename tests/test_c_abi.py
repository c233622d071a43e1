"""The C ABI (adamcore.h, docs/c-abi.md) through ctypes on the installed libadamcore.

Every CPU entry point is checked bit for bit against adamcore.adam_step (the same kernels behind
the Python API) and against the float64 textbook; every bad argument against its return code and
message, with nothing written.
"""

import ctypes
import math
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest

import adamcore
import c_abi
from conftest import CONFIGS, hparam_kwargs
from textbook import adam_textbook

lib = c_abi.load()
K = c_abi.constants()
SIZES = [0, 1, 7, 17, 1023, 65537]
DTYPES = {"f32": np.float32, "f64": np.float64}


def _uint(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits(a, b):
    np.testing.assert_array_equal(_uint(a), _uint(b))


def _state(rng, n, dtype, amsgrad):
    """A parameter, its gradient and a state as after a few steps (v > 0, vmax >= v)."""
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    m = (0.1 * rng.standard_normal(n)).astype(dtype)
    v = (0.01 * rng.random(n)).astype(dtype)
    vmax = (v + 0.01 * rng.random(n)).astype(dtype) if amsgrad else None
    return [p, g, m, v, vmax]


def _copy(arrays):
    return [None if a is None else a.copy() for a in arrays]


def c_step(arrays, hp, n=None):
    """adamcore_adam_step_* on [p, g, m, v, vmax] (None is NULL); n defaults to their size."""
    some = next(a for a in arrays if a is not None)
    fn = lib.adamcore_adam_step_f32 if some.dtype == np.float32 else lib.adamcore_adam_step_f64
    return fn(*map(c_abi.address, arrays), some.size if n is None else n,
              None if hp is None else ctypes.byref(hp))


def c_step_multi(tensors, hp, *, tables=None, lengths=None):
    """adamcore_adam_step_multi_* over tensors [(p, g, m, v, vmax), ...]; tables overrides the
    pointer tables (a dict by position 0..4 -> list of arrays or None)."""
    columns = [[t[k] for t in tensors] for k in range(5)]
    if all(a is None for a in columns[4]):
        columns[4] = None
    columns.extend([None])
    for k, column in (tables or {}).items():
        columns[k] = column
    dtype = tensors[0][0].dtype
    fn = lib.adamcore_adam_step_multi_f32 if dtype == np.float32 else lib.adamcore_adam_step_multi_f64
    lengths = [t[0].size for t in tensors] if lengths is None else lengths
    return fn(*(c_abi.pointer_table(c) for c in columns[:5]), c_abi.length_table(lengths),
              len(tensors), None if hp is None else ctypes.byref(hp))


def python_step(arrays, step, kw):
    p, g, m, v, vmax = arrays
    adamcore.adam_step(p, g, m, v, step=step, max_exp_avg_sq=vmax, **kw)


def last_error():
    return lib.adamcore_last_error().decode()


# ---- version and defaults --------------------------------------------------------------------


def test_version_matches_header_and_package():
    major, minor, patch = (int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)",
                                                    adamcore.__version__).groups())
    assert (K["VERSION_MAJOR"], K["VERSION_MINOR"], K["VERSION_PATCH"]) == (major, minor, patch)
    assert lib.adamcore_version() == major * 10000 + minor * 100 + patch
    assert lib.adamcore_version_string().decode() == f"{major}.{minor}.{patch}"
    assert f'#define ADAMCORE_VERSION_STRING "{major}.{minor}.{patch}"' in c_abi.header_text()
    from adamcore import _core
    assert _core.version == lib.adamcore_version()


def test_hparams_default_is_torchs():
    hp = lib.adamcore_hparams_default()
    assert (hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.max_lr, hp.step, hp.flags) == (
        1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0)


def test_header_constants_match_the_python_core():
    from adamcore import _core
    for name in ("DECOUPLED_WEIGHT_DECAY", "DECOUPLE_LR", "AMSGRAD", "MAXIMIZE"):
        assert K[name] == getattr(_core, name)
    codes = {name: K[name] for name in K if name == "OK" or name.startswith("ERROR_")}
    assert codes["OK"] == 0
    errors = sorted(v for n, v in codes.items() if n != "OK")
    assert errors == list(range(-len(errors), 0)), "error codes are distinct and negative"


def test_header_documents_every_function_and_field():
    """Read as a user would: a comment right above each declaration, one on each field."""
    text = c_abi.header_text()
    for decl in re.finditer(r"^ADAMCORE_API .*$", text, re.MULTILINE):
        before = text[:decl.start()].rstrip().splitlines()[-1]
        assert before.endswith("*/"), f"no comment above: {decl.group(0)}"
    struct = re.search(r"typedef struct adamcore_hparams \{(.*?)\}", text, re.DOTALL).group(1)
    fields = [line for line in struct.splitlines() if line.strip()]
    assert len(fields) == len(c_abi.HParams._fields_)
    for line in fields:
        assert "/*" in line, f"field without a comment: {line.strip()}"


def test_only_the_c_abi_is_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", adamcore.get_library()], check=True,
                         capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    declared = set(c_abi.declared_functions())
    assert exported <= declared, f"exported but not in adamcore.h: {sorted(exported - declared)}"
    missing = declared - exported
    if missing and all(name.startswith("adamcore_cuda_") for name in missing) and not any(
            name.startswith("adamcore_cuda_") for name in exported):
        pytest.skip("this libadamcore has no CUDA entry points yet (neither kernels nor fallback)")
    assert not missing, f"declared in adamcore.h but not exported: {sorted(missing)}"


# ---- the CPU steps against the Python API and the textbook ------------------------------------


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_single_step_equals_python_api_bit_for_bit(config, dtype, rng):
    kw = dict(hparam_kwargs(config), lr=1e-2)
    amsgrad = kw.get("amsgrad", False)
    for n in SIZES:
        ours = _state(rng, n, dtype, amsgrad)
        theirs = _copy(ours)
        start = _copy(ours)
        for step in (1, 2, 3):
            assert c_step(ours, c_abi.hparams(step=step, **kw)) == K["OK"], last_error()
            assert last_error() == ""
            python_step(theirs, step, kw)
        for a, b in zip(ours, theirs):
            if a is not None:
                assert_same_bits(a, b)
        assert_same_bits(ours[1], start[1])  # the grad is read only

        # one step against the float64 textbook, to the arithmetic type's rounding
        ours = _copy(start)
        assert c_step(ours, c_abi.hparams(step=4, **kw)) == K["OK"], last_error()
        ref = adam_textbook(*start, step=4, **kw)
        rtol, atol = (2e-6, 1e-7) if dtype == np.float32 else (1e-12, 1e-15)
        for a, b in zip([ours[0], ours[2], ours[3], ours[4]], ref):
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_multi_step_equals_python_api_per_tensor(config, dtype, rng):
    """One call for tensors of awkward sizes (an empty one among them) equals one adam_step per
    tensor; with 65537 elements in all the call runs on several threads where there are cores."""
    kw = dict(hparam_kwargs(config), lr=1e-2)
    amsgrad = kw.get("amsgrad", False)
    ours = [_state(rng, n, dtype, amsgrad) for n in [7, 0, 1, 65537, 17, 1023]]
    theirs = [_copy(t) for t in ours]
    for step in (1, 2):
        assert c_step_multi(ours, c_abi.hparams(step=step, **kw)) == K["OK"], last_error()
        for t in theirs:
            python_step(t, step, kw)
    for a_tensor, b_tensor in zip(ours, theirs):
        for a, b in zip(a_tensor, b_tensor):
            if a is not None:
                assert_same_bits(a, b)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_zero_tensors_and_empty_tensors_with_null_pointers_are_no_ops(dtype):
    hp = c_abi.hparams(step=1, lr=1e-3, amsgrad=True)
    single = lib.adamcore_adam_step_f32 if dtype == np.float32 else lib.adamcore_adam_step_f64
    assert single(None, None, None, None, None, 0, ctypes.byref(hp)) == K["OK"], last_error()
    multi = (lib.adamcore_adam_step_multi_f32 if dtype == np.float32
             else lib.adamcore_adam_step_multi_f64)
    assert multi(None, None, None, None, None, None, 0, ctypes.byref(hp)) == K["OK"]
    nulls = (ctypes.c_void_p * 2)(None, None)  # the tables are required, their entries not
    assert multi(nulls, nulls, nulls, nulls, nulls, c_abi.length_table([0, 0]), 2,
                 ctypes.byref(hp)) == K["OK"], last_error()


def test_every_simd_level_gives_the_same_bits(rng):
    compiled = adamcore.compiled_simd_levels()
    assert lib.adamcore_simd_level().decode() in compiled
    before = lib.adamcore_simd_level()
    start = _state(rng, 1023, np.float32, True)
    kw = dict(lr=1e-2, amsgrad=True, weight_decay=0.1)
    expected = _copy(start)
    python_step(expected, 1, kw)
    try:
        for level in adamcore.available_simd_levels():
            assert lib.adamcore_set_simd_level(level.encode()) == K["OK"], last_error()
            assert lib.adamcore_simd_level().decode() == level
            ours = _copy(start)
            assert c_step(ours, c_abi.hparams(step=1, **kw)) == K["OK"]
            for a, b in zip(ours, expected):
                assert_same_bits(a, b)
        assert lib.adamcore_set_simd_level(None) == K["OK"]
        assert lib.adamcore_simd_level().decode() == adamcore.available_simd_levels()[0]
        assert lib.adamcore_set_simd_level(b"") == K["OK"]
        assert lib.adamcore_set_simd_level(b"sse9") == K["ERROR_INVALID_VALUE"]
        assert "'sse9'" in last_error() and "baseline" in last_error()
        assert lib.adamcore_simd_level().decode() == adamcore.available_simd_levels()[0]
    finally:
        lib.adamcore_set_simd_level(before)


def test_threads_setting(rng):
    before = lib.adamcore_get_num_threads()
    assert before >= 1
    start = _state(rng, 200_000, np.float32, False)
    results = []
    try:
        for threads in (1, 2, 3):
            assert lib.adamcore_set_num_threads(threads) == K["OK"]
            assert lib.adamcore_get_num_threads() == threads
            ours = _copy(start)
            assert c_step(ours, c_abi.hparams(step=1, lr=1e-2)) == K["OK"]
            results.append(ours)
        for other in results[1:]:
            for a, b in zip(results[0], other):
                if a is not None:
                    assert_same_bits(a, b)
        for bad in (0, -1):
            assert lib.adamcore_set_num_threads(bad) == K["ERROR_INVALID_VALUE"]
            assert "threads must be >= 1" in last_error()
        assert lib.adamcore_get_num_threads() == 3
    finally:
        lib.adamcore_set_num_threads(before)


# ---- bad arguments: a code, a message, nothing written ----------------------------------------

BAD_HPARAMS = [
    (dict(beta1=1.0), "beta1 must be in [0, 1), got 1"),
    (dict(beta1=-0.1), "beta1 must be in [0, 1), got -0.1"),
    (dict(beta1=math.nan), "beta1 must be in [0, 1), got nan"),
    (dict(beta2=1.0), "beta2 must be in [0, 1), got 1"),
    (dict(lr=math.nan), "lr must be a finite number >= 0, got nan"),
    (dict(lr=math.inf), "lr must be a finite number >= 0, got inf"),
    (dict(lr=-1e-3), "lr must be a finite number >= 0, got -0.001"),
    (dict(eps=-1.0), "eps must be a finite number >= 0"),
    (dict(weight_decay=math.nan), "weight_decay must be a finite number >= 0, got nan"),
    (dict(step=0), "step must be >= 1"),
    (dict(flags=0xC0), "unknown flag bits 192"),
    (dict(flags=0x2, max_lr=0.0), "decouple_lr needs max_lr, a finite number > 0, got 0"),
]


def _bad_hp(**fields):
    hp = c_abi.hparams(step=1, lr=1e-3)
    for name, value in fields.items():
        setattr(hp, name, value)
    return hp


def _expect_error(rc, code, message):
    assert rc == K[code], f"expected {code}, got {rc} ({last_error()!r})"
    assert message in last_error(), f"{message!r} not in {last_error()!r}"


def _assert_untouched(arrays, snapshot):
    for a, b in zip(arrays, snapshot):
        if a is not None:
            assert_same_bits(a, b)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("fields,message", BAD_HPARAMS, ids=[m for _, m in BAD_HPARAMS])
def test_bad_hparams_are_rejected_before_any_write(dtype, fields, message, rng):
    arrays = _state(rng, 33, dtype, True)
    snapshot = _copy(arrays)
    _expect_error(c_step(arrays, _bad_hp(**fields)), "ERROR_INVALID_VALUE", message)
    _assert_untouched(arrays, snapshot)
    tensors = [_state(rng, n, dtype, True) for n in (5, 40000)]
    snapshots = [_copy(t) for t in tensors]
    _expect_error(c_step_multi(tensors, _bad_hp(**fields)), "ERROR_INVALID_VALUE", message)
    for t, s in zip(tensors, snapshots):
        _assert_untouched(t, s)


SINGLE_BAD = [
    # (which array to replace with NULL or how to break the call, hparams fields, message)
    ("param", {}, "param is NULL (n is 33)"),
    ("grad", {}, "grad is NULL (n is 33)"),
    ("exp_avg", {}, "exp_avg is NULL (n is 33)"),
    ("exp_avg_sq", {}, "exp_avg_sq is NULL (n is 33)"),
    ("max_exp_avg_sq", {"flags": 0x4}, "max_exp_avg_sq is NULL (n is 33) but ADAMCORE_AMSGRAD is set"),
    ("n", {}, "n must be >= 0, got -1"),
    ("hp", {}, "hp is NULL"),
    ("alias", {}, "param 0 and exp_avg 0 share memory"),
]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("what,fields,message", SINGLE_BAD, ids=[c[0] for c in SINGLE_BAD])
def test_bad_single_step_arguments(dtype, what, fields, message, rng):
    arrays = _state(rng, 33, dtype, True)
    snapshot = _copy(arrays)
    hp = _bad_hp(**fields)
    call = list(arrays)
    names = ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    if what in names:
        call[names.index(what)] = None
    if what == "alias":
        call[2] = call[0]
    rc = c_step(call, None if what == "hp" else hp, n=-1 if what == "n" else None)
    _expect_error(rc, "ERROR_INVALID_VALUE", message)
    _assert_untouched(arrays, snapshot)


MULTI_BAD = [
    ("params", "params is NULL (count is 3)"),
    ("grads", "grads is NULL (count is 3)"),
    ("exp_avgs", "exp_avgs is NULL (count is 3)"),
    ("exp_avg_sqs", "exp_avg_sqs is NULL (count is 3)"),
    ("max_exp_avg_sqs", "max_exp_avg_sqs is NULL (count is 3) but ADAMCORE_AMSGRAD is set"),
    ("lengths", "lengths is NULL (count is 3)"),
    ("params[2]", "params[2] is NULL (lengths[2] is 9)"),
    ("grads[2]", "grads[2] is NULL (lengths[2] is 9)"),
    ("max_exp_avg_sqs[2]", "max_exp_avg_sqs[2] is NULL (lengths[2] is 9) but ADAMCORE_AMSGRAD is set"),
    ("lengths[2]", "lengths[2] must be >= 0, got -9"),
    ("hp", "hp is NULL"),
    ("alias", "param 2 and exp_avg_sq 2 share memory"),
]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("what,message", MULTI_BAD, ids=[c[0] for c in MULTI_BAD])
def test_bad_multi_step_arguments(dtype, what, message, rng):
    """The broken tensor comes last: the tensors before it must not have been stepped."""
    tensors = [_state(rng, n, dtype, True) for n in (40000, 3, 9)]
    snapshots = [_copy(t) for t in tensors]
    names = ["params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"]
    tables, lengths = {}, [t[0].size for t in tensors]
    column = what.split("[")[0]
    if what == "lengths":
        lengths = None
    elif what == "lengths[2]":
        lengths[2] = -9
    elif what == "alias":
        tables[3] = [t[3] for t in tensors[:2]] + [tensors[2][0]]
    elif column in names:
        k = names.index(column)
        tables[k] = None if what == column else [t[k] for t in tensors[:2]] + [None]
    hp = None if what == "hp" else c_abi.hparams(step=1, lr=1e-3, amsgrad=True)
    if lengths is None:
        fn = (lib.adamcore_adam_step_multi_f32 if dtype == np.float32
              else lib.adamcore_adam_step_multi_f64)
        columns = [c_abi.pointer_table([t[k] for t in tensors]) for k in range(5)]
        rc = fn(*columns, None, 3, ctypes.byref(hp))
    else:
        rc = c_step_multi(tensors, hp, tables=tables, lengths=lengths)
    _expect_error(rc, "ERROR_INVALID_VALUE", message)
    for t, s in zip(tensors, snapshots):
        _assert_untouched(t, s)


def test_last_error_is_per_thread_and_cleared_by_success(rng):
    arrays = _state(rng, 8, np.float32, False)
    assert c_step(arrays, _bad_hp(beta1=2.0)) == K["ERROR_INVALID_VALUE"]
    main_message = last_error()
    assert "beta1" in main_message

    seen = {}

    def other_thread():
        seen["before"] = last_error()
        seen["rc"] = c_step(_copy(arrays), _bad_hp(lr=-1.0))
        seen["after"] = last_error()

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen["before"] == ""  # a new thread has no error yet
    assert seen["rc"] == K["ERROR_INVALID_VALUE"] and "lr must be" in seen["after"]
    assert last_error() == main_message  # the other thread's failure did not touch this one

    assert c_step(arrays, c_abi.hparams(step=1, lr=1e-3)) == K["OK"]
    assert last_error() == ""


# ---- CUDA entry points: UNAVAILABLE without the CUDA backend -----------------------------------


def test_cuda_entry_points_without_a_usable_backend(rng):
    if not hasattr(lib, "adamcore_cuda_available"):
        pytest.skip("this libadamcore has no CUDA entry points yet (neither kernels nor fallback)")
    available = lib.adamcore_cuda_available()
    assert available in (0, 1)
    if available:
        pytest.skip("CUDA is usable here; the CUDA tests cover its numbers")
    p, g, m, v, _ = _state(rng, 4, np.float32, False)
    hp = ctypes.byref(c_abi.hparams(step=1, lr=1e-3))
    pointers = [c_abi.address(a) for a in (p, g, m, v)] + [None]
    assert lib.adamcore_cuda_adam_step_f32(*pointers, 4, hp, None) == K["ERROR_UNAVAILABLE"]
    assert "CUDA" in last_error()
    assert lib.adamcore_cuda_adam_step_f64(*pointers, 4, hp, None) == K["ERROR_UNAVAILABLE"]
    tables = [c_abi.pointer_table([a]) for a in (p, g, m, v)] + [None]
    assert lib.adamcore_cuda_adam_step_multi_f32(*tables, c_abi.length_table([4]), 1, hp,
                                                 None) == K["ERROR_UNAVAILABLE"]
    if hasattr(lib, "adamcore_cuda_adam_step_tensors"):
        t = c_abi.Tensor()
        assert lib.adamcore_cuda_adam_step_tensors(ctypes.byref(t), 1, hp, None) == \
            K["ERROR_UNAVAILABLE"]


@pytest.mark.parametrize("share", ["same param twice", "overlapping params", "param is a state"])
def test_multi_step_refuses_tensors_sharing_memory(share, rng):
    buf = rng.standard_normal(40).astype(np.float32)
    zeros = lambda: np.zeros(10, np.float32)  # noqa: E731
    g = np.ones(10, np.float32)
    first = (buf[:10], g, zeros(), zeros(), None)
    second = {"same param twice": (buf[:10], g, zeros(), zeros(), None),
              "overlapping params": (buf[5:15], g, zeros(), zeros(), None),
              "param is a state": (buf[20:30], g, buf[:10], zeros(), None)}[share]
    snapshot = [np.array(a, copy=True) for t in (first, second) for a in t if a is not None]
    rc = c_step_multi([first, second], c_abi.hparams(step=1, lr=0.1))
    _expect_error(rc, "ERROR_INVALID_VALUE", "share memory, so an element would be updated twice")
    _assert_untouched([a for t in (first, second) for a in t if a is not None], snapshot)


def test_multi_step_disjoint_tensors_of_one_buffer_are_fine(rng):
    buf = rng.standard_normal(20).astype(np.float32)
    g = np.ones(10, np.float32)
    tensors = [(buf[:10], g, np.zeros(10, np.float32), np.zeros(10, np.float32), None),
               (buf[10:], g, np.zeros(10, np.float32), np.zeros(10, np.float32), None)]
    assert c_step_multi(tensors, c_abi.hparams(step=1, lr=0.1)) == K["OK"], last_error()


# ---- adamcore_adam_step_tensors: any dtype and the low-precision modes ------------------------


def _tensor(p, g, m, v, comp=None, seed=0, vmax=None):
    codes = {"float16": K["FLOAT16"], "bfloat16": K["BFLOAT16"], "float32": K["FLOAT32"],
             "float64": K["FLOAT64"]}
    name = lambda a: "bfloat16" if a.dtype.name == "bfloat16" else a.dtype.name  # noqa: E731
    return c_abi.Tensor(c_abi.address(p), c_abi.address(g), c_abi.address(m), c_abi.address(v),
                        c_abi.address(vmax), c_abi.address(comp), p.size, seed, codes[name(p)],
                        codes[name(g)], codes[name(m)], 0)


@pytest.mark.parametrize("mode", ["kahan", "stochastic", "state-bf16"])
def test_tensors_entry_point_matches_python_api(mode):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(3)
    n = 1029
    p = rng.standard_normal(n).astype(bf16)
    g = rng.standard_normal(n).astype(np.float32)
    state = bf16 if mode == "state-bf16" else np.float32
    m, v = np.zeros(n, state), np.zeros(n, state)
    comp = np.zeros(n, bf16) if mode == "kahan" else None
    # the Python API on the same values (NumPy bfloat16 takes the reference path)
    q, mq, vq = p.copy(), m.copy(), v.copy()
    cq = None if comp is None else comp.copy()
    flags = {"kahan": K["KAHAN_SUMMATION"], "stochastic": K["STOCHASTIC_ROUNDING"]}.get(mode, 0)
    for step in (1, 2):
        hp = c_abi.hparams(step=step, lr=1e-2)
        hp.flags |= flags
        # seed 2**32 * 5 + 0: what Adam(rounding_seed=5) gives param 0, and adam_step below
        t = _tensor(p, g, m, v, comp, seed=5 << 32)
        assert lib.adamcore_adam_step_tensors(ctypes.byref(t), 1, ctypes.byref(hp)) == K["OK"], \
            last_error()
        adamcore.adam_step(q, g, mq, vq, step=step, lr=1e-2, kahan_summation=mode == "kahan",
                           compensation=cq, stochastic_rounding=mode == "stochastic",
                           rounding_seed=5)
    assert np.array_equal(p.view(np.uint16), q.view(np.uint16))
    assert np.array_equal(m.astype(np.float32), mq.astype(np.float32))
    if comp is not None:
        assert np.array_equal(comp.view(np.uint16), cq.view(np.uint16))


def test_tensors_entry_point_refuses_with_nothing_written():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = np.ones(8, ml_dtypes.bfloat16)
    g = np.ones(8, np.float32)
    m, v = np.zeros(8, np.float32), np.zeros(8, np.float32)
    hp = c_abi.hparams(step=1, lr=0.1)
    hp.flags |= K["KAHAN_SUMMATION"]
    t = _tensor(p, g, m, v)
    assert lib.adamcore_adam_step_tensors(ctypes.byref(t), 1, ctypes.byref(hp)) == \
        K["ERROR_INVALID_VALUE"]
    assert "compensation 0 is missing" in last_error()
    hp.flags |= K["STOCHASTIC_ROUNDING"]
    assert lib.adamcore_adam_step_tensors(ctypes.byref(t), 1, ctypes.byref(hp)) == \
        K["ERROR_INVALID_VALUE"]
    assert "exclude each other" in last_error()
    hp.flags = K["STOCHASTIC_ROUNDING"]
    p32 = np.ones(8, np.float32)
    t32 = _tensor(p32, g, m, v)
    assert lib.adamcore_adam_step_tensors(ctypes.byref(t32), 1, ctypes.byref(hp)) == \
        K["ERROR_INVALID_DTYPE"]
    assert "stochastic_rounding is for bfloat16" in last_error()
    bad = _tensor(p, g, m, v)
    bad.state_dtype = 9
    hp.flags = 0
    assert lib.adamcore_adam_step_tensors(ctypes.byref(bad), 1, ctypes.byref(hp)) == \
        K["ERROR_INVALID_DTYPE"]
    assert "tensors[0].state_dtype is 9" in last_error()
    bad = _tensor(p, g, m, v)
    bad.reserved = 1
    assert lib.adamcore_adam_step_tensors(ctypes.byref(bad), 1, ctypes.byref(hp)) == \
        K["ERROR_INVALID_VALUE"]
    # the f32 entry points take no Kahan buffer: refused, not ignored
    hp.flags = K["KAHAN_SUMMATION"]
    assert lib.adamcore_adam_step_f32(c_abi.address(p32), c_abi.address(g), c_abi.address(m),
                                      c_abi.address(v), None, 8, ctypes.byref(hp)) == \
        K["ERROR_INVALID_DTYPE"]
    assert np.all(p.astype(np.float32) == 1) and np.all(m == 0) and np.all(p32 == 1)
