"""The JAX path: adamcore's core as an XLA FFI call under jax.jit, and adamcore.optax."""

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import adamcore  # noqa: E402
from adamcore import _jax_backend  # noqa: E402

if not _jax_backend.available():
    pytest.skip("adamcore was built without adamcore._jax_ffi", allow_module_level=True)

import adamcore.optax as aox  # noqa: E402

SIZES = [(), (1,), (7,), (17,), (1023,), (65537,), (3, 5)]


def _numpy_adamw(params, grads_seq, lr, wd, steps):
    ps = [np.array(p, copy=True) for p in params]
    opt = adamcore.AdamW(ps, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    for t in range(steps):
        opt.step(grads_seq(t))
    return ps


def _grads(shapes, dtype=np.float32, seed=0):
    def at(t):
        r = np.random.default_rng(seed + t)
        return [r.standard_normal(s).astype(dtype) for s in shapes]
    return at


def _run_fused(tx, params, grads_seq, steps, donate=False):
    step = jax.jit(lambda g, s, p: aox.apply(tx, g, s, p), donate_argnums=(1, 2) if donate else ())
    state = tx.init(params)
    for t in range(steps):
        params, state = step([jnp.asarray(g) for g in grads_seq(t)], state, params)
    return params, state


def test_import_adamcore_does_not_import_jax():
    code = "import sys, adamcore; print('jax' in sys.modules, 'optax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_200_steps_bit_for_bit_with_numpy_adam(simd_level):
    shapes = [(1,), (7,), (17,), (1023,), (65537,), (), (4, 9)]
    r = np.random.default_rng(1)
    params = [r.standard_normal(s).astype(np.float32) for s in shapes]
    grads = _grads(shapes)
    lr, wd = 1e-3, 1e-2  # a float64 lr: it reaches the core exactly, also without x64
    expected = _numpy_adamw(params, grads, lr, wd, 200)
    got, state = _run_fused(aox.adamw(lr, weight_decay=wd), [jnp.asarray(p) for p in params],
                            grads, 200)
    assert int(state.count) == 200
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(np.asarray(g), e)


def test_matches_optax_adam_to_float32_rounding():
    # optax.adam(lr, b1, b2, eps, eps_root=0) is adamcore.optax.adam with the same arguments
    shapes = [(1023,), (17,), ()]
    r = np.random.default_rng(2)
    params = [jnp.asarray(r.standard_normal(s).astype(np.float32)) for s in shapes]
    grads = _grads(shapes, seed=5)
    ours, theirs = aox.adam(1e-2), optax.adam(1e-2)

    def run(tx):
        upd = jax.jit(lambda g, s, p: tx.update(g, s, p))
        p, s = params, tx.init(params)
        for t in range(200):
            u, s = upd([jnp.asarray(x) for x in grads(t)], s, p)
            p = optax.apply_updates(p, u)
        return p

    for a, b in zip(run(ours), run(theirs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_donated_buffers_are_updated_in_place():
    tx = aox.adam(1e-3)
    params = [jnp.ones((4096,), jnp.float32), jnp.ones((7,), jnp.float32)]
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: aox.apply(tx, g, s, p), donate_argnums=(1, 2))
    grads = [jnp.full((4096,), 0.5, jnp.float32), jnp.full((7,), 0.5, jnp.float32)]
    params, state = step(grads, state, params)  # first call: compile
    before = [x.unsafe_buffer_pointer() for x in params + state.mu + state.nu]
    params, state = step(grads, state, params)
    after = [x.unsafe_buffer_pointer() for x in params + state.mu + state.nu]
    # XLA may hand a donated buffer to any output of its shape, so compare as sets
    assert sorted(before) == sorted(after)
    assert float(params[0][0]) < 1.0


def test_no_retrace_when_lr_changes():
    traces = []

    def train(p, s, g, lr):
        traces.append(1)
        tx = aox.adam(lr)  # a traced lr: a device scalar of the FFI call
        return aox.apply(tx, g, s, p)

    step = jax.jit(train)
    p = [jnp.ones((9,), jnp.float32)]
    s = aox.adam(1e-3).init(p)
    for lr in (1e-3, 2e-3, 5e-4):
        p, s = step(p, s, [jnp.ones((9,), jnp.float32)], lr)
    assert len(traces) == 1 and int(s.count) == 3


def test_schedule_matches_numpy_adam_with_the_same_schedule():
    schedule = optax.linear_schedule(1e-2, 1e-3, 50)
    shapes = [(33,)]
    r = np.random.default_rng(3)
    params = [r.standard_normal(s).astype(np.float32) for s in shapes]
    grads = _grads(shapes, seed=9)
    got, _ = _run_fused(aox.adam(schedule), [jnp.asarray(p) for p in params], grads, 60)
    ps = [p.copy() for p in params]
    # the schedule's float32 value as XLA computes it inside jit (it may contract to FMA)
    jitted = jax.jit(schedule)
    opt = adamcore.Adam(ps, lr=lambda c: float(jitted(jnp.int32(c))))
    for t in range(60):
        opt.step(grads(t))
    np.testing.assert_array_equal(np.asarray(got[0]), ps[0])


def test_mixed_pytree_with_bf16_params_and_float32_state():
    torch = pytest.importorskip("torch")
    tree = {"w": jnp.linspace(-1, 1, 1023, dtype=jnp.bfloat16),
            "b": {"x": jnp.arange(7, dtype=jnp.float32), "s": jnp.float32(0.5)},
            "h": jnp.linspace(0, 1, 17, dtype=jnp.float16)}
    tx = aox.adamw(1e-2, weight_decay=0.1)
    state = tx.init(tree)
    assert state.mu["w"].dtype == jnp.float32 and state.nu["h"].dtype == jnp.float32
    assert state.mu["b"]["x"].dtype == jnp.float32
    grads = jax.tree.map(lambda p: jnp.cos(p.astype(jnp.float32)), tree)  # float32 grads
    step = jax.jit(lambda g, s, p: aox.apply(tx, g, s, p))
    new, state = tree, state
    for _ in range(3):
        new, state = step(grads, state, new)
    assert new["w"].dtype == jnp.bfloat16 and new["h"].dtype == jnp.float16
    # the same on torch CPU tensors through adamcore.AdamW
    def t(x):
        return torch.from_numpy(np.array(x.astype(jnp.float32))).to(
            {jnp.bfloat16: torch.bfloat16, jnp.float16: torch.float16}.get(x.dtype.type, torch.float32)
            if x.dtype != jnp.float32 else torch.float32)
    leaves = [tree["b"]["s"], tree["b"]["x"], tree["h"], tree["w"]]
    grad_leaves = [grads["b"]["s"], grads["b"]["x"], grads["h"], grads["w"]]
    tparams = [t(x) for x in leaves]
    tparams[2], tparams[3] = tparams[2].half(), tparams[3].bfloat16()
    opt = adamcore.AdamW(tparams, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.step([torch.from_numpy(np.array(g)) for g in grad_leaves])
    got = [new["b"]["s"], new["b"]["x"], new["h"], new["w"]]
    for a, b in zip(got, tparams):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.float32)), b.float().numpy())


@pytest.mark.parametrize("shape", SIZES)
def test_adam_step_backend_matches_numpy(shape, simd_level):
    r = np.random.default_rng(4)
    p, g = r.standard_normal(shape).astype(np.float32), r.standard_normal(shape).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    backend = _jax_backend.JaxNative()
    # copies: JAX may share a NumPy array's memory on the CPU, and the NumPy step below writes
    jp, jm, jv = (jnp.asarray(x.copy()) for x in (p, m, v))
    from adamcore._dispatch import StepTensor
    from adamcore._hparams import StepHParams
    for t in range(1, 4):
        hp = StepHParams(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, t, 0)
        (jp, jm, jv, _), = backend.run([StepTensor(jp, jnp.asarray(g.copy()), jm, jv, None, 0)],
                                       [hp])
        jax.block_until_ready(jp)
        adamcore.adam_step(p, g, m, v, step=t, lr=1e-3)
    np.testing.assert_array_equal(np.asarray(jp), p)
    np.testing.assert_array_equal(np.asarray(jv), v)


def test_vmap_gives_each_batch_element_its_own_lr():
    def one(p, g, m, v, lr):
        out = _jax_backend.fused_step([p], [g], [m], [v], None, lr=lr, step=1, beta1=0.9,
                                      beta2=0.999, eps=1e-8, weight_decay=0.0, max_lr=1.0,
                                      flags=0)
        return out[0][0]

    p = jnp.ones((3, 5), jnp.float32)
    lrs = jnp.asarray([0.0, 0.1, 0.2], jnp.float32)
    got = jax.jit(jax.vmap(one))(p, jnp.ones_like(p), jnp.zeros_like(p), jnp.zeros_like(p), lrs)
    for b in range(3):
        q, g = np.ones(5, np.float32), np.ones(5, np.float32)
        adamcore.adam_step(q, g, np.zeros(5, np.float32), np.zeros(5, np.float32), step=1,
                           lr=float(lrs[b]))
        np.testing.assert_array_equal(np.asarray(got[b]), q)


def _messages(fn):
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", ["shape", "grad_dtype", "state_dtype", "int_param", "eps_root",
                                  "beta"])
def test_bad_inputs_raise_at_trace_time_with_adamcore_messages(case):
    p32 = jnp.zeros((3,), jnp.float32)
    if case == "eps_root":
        with pytest.raises(ValueError, match="eps_root"):
            aox.adam(1e-3, eps_root=1e-8)
        return
    if case == "beta":
        with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
            aox.adam(1e-3, b2=1.0)
        return
    params = {"shape": [p32], "grad_dtype": [p32], "state_dtype": [p32],
              "int_param": [jnp.zeros((3,), jnp.int32)]}[case]
    grads = {"shape": [jnp.zeros((4,), jnp.float32)], "grad_dtype": [jnp.zeros((3,), jnp.float16)],
             "state_dtype": [p32], "int_param": [jnp.zeros((3,), jnp.int32)]}[case]
    tx = aox.adam(1e-3)
    state = tx.init([p32])
    if case == "state_dtype":
        state = state._replace(mu=[jnp.zeros((3,), jnp.float16)])
    traced = jax.jit(lambda g, s, p: aox.apply(tx, g, s, p))
    kind, message = _messages(lambda: traced(grads, state, params))
    # the NumPy path's message for the same mistake
    np_params = [np.array(x) for x in params]
    np_grads = [np.array(x) for x in grads]
    np_m = [np.array(state.mu[0])]
    ref_kind, ref = _messages(lambda: adamcore.adam_step(
        np_params[0], np_grads[0], np_m[0], np.zeros((3,), np.float32), step=1, lr=1e-3))
    assert (kind, message) == (ref_kind, ref)


def test_scale_by_adam_chains_like_optax():
    p = [jnp.linspace(-1, 1, 17, dtype=jnp.float32)]
    g = [jnp.cos(p[0])]
    ours = optax.chain(aox.scale_by_adam(), optax.scale(-1e-2))
    theirs = optax.chain(optax.scale_by_adam(), optax.scale(-1e-2))
    a, _ = jax.jit(ours.update)(g, ours.init(p), p)
    b, _ = jax.jit(theirs.update)(g, theirs.init(p), p)
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), rtol=1e-5)  # optax's f32 bias correction


def test_inject_hyperparams_traces_the_lr_and_refuses_traced_betas():
    p = {"w": jnp.linspace(-1, 1, 7, dtype=jnp.float32)}
    g = {"w": jnp.cos(p["w"])}
    tx = optax.inject_hyperparams(aox.adam, static_args=("b1", "b2", "eps", "eps_root"))(
        learning_rate=1e-2)
    u, _ = jax.jit(tx.update)(g, tx.init(p), p)
    ref, _ = jax.jit(aox.adam(jnp.float32(1e-2)).update)(g, aox.adam(1e-2).init(p), p)
    np.testing.assert_array_equal(np.asarray(u["w"]), np.asarray(ref["w"]))
    loose = optax.inject_hyperparams(aox.adam)(learning_rate=1e-2)
    with pytest.raises(ValueError, match="b1 must be a static number"):
        jax.jit(loose.update)(g, loose.init(p), p)


def test_bench_has_the_jax_rows():
    """`python -m adamcore bench` runs adamcore.optax against optax.adam through jit: 1M and 64M,
    one tensor and 64, selected by --cases jax; both step, and the probe sets the percentage."""
    from adamcore.bench import cases, runner

    full = cases.default_cases("jax", quick=False, cores=2)
    assert {(c.elements, c.tensors) for c in full} == {
        (1 << 20, 1), (1 << 20, 64), (64 << 20, 1), (64 << 20, 64)}
    assert "jax" in runner.devices(None)
    every = cases.default_cases("cpu", quick=False, cores=2) + full
    assert cases.select(every, ["JAX"]) == full
    rows = runner.run_case(cases.Case("jax", (1000, 23), threads=1), quick=True, budget_s=0.0,
                           sample_s=1e-4, progress=lambda text: None)
    assert {r["impl"]: r["status"] for r in rows} == {
        "probe (roofline)": "ok", "adamcore.optax (jit)": "ok", "optax.adam (jit)": "ok"}, rows
    for r in rows:
        assert r["ms"] > 0 and r["pct_probe"] > 0 and r["bytes"] == 28 * 1023


def test_bench_steps_update_the_donated_buffers_in_place():
    """The bench times a training loop's step, not copies: with the outputs in the donated
    arguments' order, every array of params and state keeps its buffer (adamcore's and optax's)."""
    from adamcore.bench import cases, jax_peers

    work = jax_peers.make_work(cases.Case("jax", (1000, 23), threads=1))
    for peer in (jax_peers.AdamcoreOptax(), jax_peers.OptaxAdam()):
        step = peer.setup(work).step
        step()

        def pointers():
            return [a.unsafe_buffer_pointer() for a in jax.tree_util.tree_leaves(step.arrays)
                    if a.size > 1]

        before = pointers()
        assert len(before) == 3 * 2  # params, mu, nu of two tensors
        step()
        step()
        assert pointers() == before, peer.name


def test_a_low_precision_state_is_refused_by_name_inside_jit():
    # bfloat16 state is a valid state_dtype elsewhere, but the FFI call keeps float32 state
    p32 = jnp.zeros((3,), jnp.float32)
    tx = aox.adam(1e-3)
    state = tx.init([p32])._replace(mu=[jnp.zeros((3,), jnp.bfloat16)])
    with pytest.raises(TypeError, match=r"exp_avg 0 has dtype bfloat16; adamcore's XLA FFI"):
        jax.jit(lambda g, s, p: aox.apply(tx, g, s, p))([p32], state, [p32])
