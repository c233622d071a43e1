"""adamcore.minimize and adamcore.scipy_adam: Adam as a SciPy-style minimizer of NumPy objectives.

The loop evaluates the objective once per iterate and steps ``x`` in place with
:class:`adamcore.Adam` (so the C++ core does the update). Iterate ``k`` is the point after ``k``
Adam steps; ``x0`` (projected into the bounds) is iterate 0. The gradient at iterate ``k`` drives
step ``k + 1``, and the run ends with the value and gradient of the point it returns, so
``res.fun`` and ``res.jac`` always belong to ``res.x``, as in SciPy.
"""

from __future__ import annotations

import inspect
import math
import operator
import sys
import time
import warnings

import numpy as np

from . import _core

from ._optimizer import Adam

# status codes (res.status) and their messages; 99 and its message are SciPy's for StopIteration
CONVERGED, MAXITER, CALLBACK = 0, 1, 99
_MESSAGES = {
    "gtol": "Optimization terminated successfully: max |gradient| <= gtol.",
    "ftol": "Optimization terminated successfully: relative change of fun <= ftol.",
    "completed": ("Completed maxiter iterations; no convergence test was on (gtol=0, "
                  "ftol=None), so this is a normal end."),
    "maxiter": "Maximum number of iterations has been exceeded.",
    "callback": "`callback` raised `StopIteration`.",
}
_DTYPES = (np.float16, np.float32, np.float64)


def minimize(
    fun,
    x0,
    args=(),
    method=None,
    jac=None,
    hess=None,
    hessp=None,
    bounds=None,
    constraints=(),
    tol=None,
    callback=None,
    options=None,
    *,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    decoupled_weight_decay=False,
    amsgrad=False,
    maxiter=1000,
    gtol=1e-6,
    ftol=None,
    progress=False,
    disp=False,
):
    r"""Minimizes ``fun(x, *args)`` with Adam; a first-order method for smooth or stochastic
    objectives, with ``scipy.optimize.minimize``'s signature: the same call works with both.

    SciPy's arguments: ``fun, x0, args, method, jac, hess, hessp, bounds, constraints, tol,
    callback, options``. ``method`` is ``None``, ``"adam"`` or :func:`adamcore.scipy_adam`
    (other methods are SciPy's: call ``scipy.optimize.minimize``). ``hess``, ``hessp`` and
    ``constraints`` are refused (Adam is first order and handles bounds only). ``tol`` sets
    ``gtol`` unless ``gtol`` is given. ``options`` is a dict of the keywords below
    (``maxiter``, ``disp``, ``lr``, ``betas``, ...), as SciPy's methods take them; a name given
    both as a keyword and in ``options`` is a TypeError, and an unknown option is ignored with
    an ``OptimizeWarning``, as in SciPy. Note that ``eps`` is Adam's epsilon, not a
    finite-difference step as in BFGS's options.

    Args:
        fun: the objective, ``fun(x, *args) -> float``; with ``jac=True`` it returns
            ``(value, gradient)``. ``x`` is the optimizer's own array, read-only, and updated
            in place between calls: copy it if you keep it.
        x0: the starting point, an array of any shape. float16, float32 and float64 are kept
            (float32 ``x0`` gives a float32 ``x`` and float32 arithmetic); integers become
            float64. ``x0`` itself is not changed.
        args: extra arguments for ``fun`` and ``jac``.
        jac: the gradient. A callable ``jac(x, *args)`` returning an array shaped like ``x``;
            ``True`` when ``fun`` returns ``(value, gradient)``; or ``None`` / ``"2-point"`` for
            forward differences and ``"3-point"`` for central differences. Finite differences
            cost ``x.size + 1`` (``2 x.size + 1``) objective calls per iteration instead of one,
            so they are slow on anything but small problems, and they are meaningless on a
            stochastic objective: give a gradient when you can.
        lr: the learning rate, or a schedule ``count -> lr`` (see :class:`adamcore.Adam`).
        betas, eps, amsgrad: as in :class:`adamcore.Adam`.
        weight_decay: an L2 penalty as in torch.optim.Adam: ``weight_decay * x`` is added to
            the gradient, so Adam minimizes ``fun(x) + weight_decay / 2 * |x|^2``. ``res.fun``
            and ``res.jac`` are ``fun``'s own (without the penalty); the gtol test uses the
            penalized gradient. With ``decoupled_weight_decay=True`` the decay is AdamW's.
        maxiter: the number of Adam steps at most (``0`` only evaluates ``x0``).
        gtol: stop when ``max |gradient| <= gtol`` at an iterate (with bounds, the projected
            gradient ``x - clip(x - gradient, lo, hi)``, as L-BFGS-B's ``pgtol``). ``0`` (or
            ``None``) turns the test off.
        ftol: stop when ``|f_k - f_{k+1}| <= ftol * max(|f_k|, |f_{k+1}|, 1)``. Off by default
            (``None`` or ``0``): Adam's value is not monotone, so a small change may be a pause.
            With both tests off (``gtol=0``), the run lasts exactly ``maxiter`` steps, which is
            what a stochastic (minibatch) objective needs.
        bounds: ``scipy.optimize.Bounds`` or a sequence of ``(lo, hi)`` pairs, one per element
            of ``x`` in C order, ``None`` for no bound. ``x0`` is clipped into the box and every
            iterate is projected onto it after its step (projected Adam); finite-difference
            points stay inside it too. For float16/float32 ``x`` the bounds are rounded inward,
            so every iterate satisfies them exactly.
        callback: called after each iteration. SciPy's convention: a callable whose only
            parameter is named ``intermediate_result`` gets an OptimizeResult with ``x`` (a
            copy), ``fun`` and ``nit``; any other callable gets a copy of ``x``. Raising
            ``StopIteration`` in it ends the run with status 99.
        progress: show a progress bar with the current loss (tqdm if installed, else a line on
            stderr).
        disp: print the final message and counts, as SciPy's methods do.

    Returns:
        ``scipy.optimize.OptimizeResult`` when SciPy is installed (else a dict with attribute
        access and the same fields): ``x``; ``fun`` and ``jac``, the value and gradient at
        ``x`` (the last point evaluated); ``nit``, the Adam steps taken; ``nfev`` and ``njev``,
        the calls of ``fun`` and gradient evaluations (each iterate is evaluated once:
        ``nit + 1`` with a gradient; finite differences add their calls to ``nfev``);
        ``success``, ``status`` and ``message``. Status 0: converged (gtol or ftol), or
        ``maxiter`` steps done with both tests off; 1: ``maxiter`` reached before a test was
        met; 99: the callback raised StopIteration.

    Raises:
        TypeError, ValueError: bad ``x0``, options, bounds, a non-scalar value or a gradient
            of the wrong shape or kind, before the first step where it can be known.
        FloatingPointError: ``fun`` or its gradient gave inf or NaN; the message names the
            iteration (often a sign that ``lr`` is too large or that ``x`` left ``fun``'s
            domain: ``bounds`` can keep it inside).
    """
    _check_method(method)
    _refuse_second_order(hess, hessp, constraints)
    if options:
        given = {name: value for name, value in locals().items()
                 if name in _OPTIONS and value is not _DEFAULTS[name]}
        merged = _merge_options(given, options)
        return minimize(fun, x0, args, method, jac, None, None, bounds, (), tol, callback,
                        None, **merged)
    if tol is not None and gtol is _DEFAULTS["gtol"]:
        gtol = tol  # as SciPy's BFGS: tol is the gradient tolerance
    x = _initial_point(x0)
    if not isinstance(args, tuple):
        args = (args,)
    maxiter = _check_maxiter(maxiter)
    gtol = _check_tol("gtol", gtol)
    ftol = _check_tol("ftol", ftol)
    box = _check_bounds(bounds, x)
    if box is not None:
        np.clip(x, *box, out=x)
    notify = _callback_caller(callback)
    opt = Adam([x], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
               decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad)
    l2 = 0.0 if decoupled_weight_decay else float(weight_decay)
    objective = _Objective(fun, jac, args, x, box)

    view = x.view()
    view.flags.writeable = False  # fun must not move the optimizer's point
    f, g = objective(view, 0)
    nit, why = 0, None
    bar = _Progress(maxiter, f) if progress else None
    try:
        while True:
            if gtol and _stationarity(x, g, l2, box) <= gtol:
                why = "gtol"
                break
            if nit >= maxiter:
                why = "maxiter" if (gtol or ftol) else "completed"
                break
            opt.step([g])
            if box is not None:
                np.clip(x, *box, out=x)
            nit += 1
            f_old = f
            f, g = objective(view, nit)
            if bar is not None:
                bar.update(f)
            if notify is not None and notify(x, f, nit):
                why = "callback"
                break
            if ftol and abs(f_old - f) <= ftol * max(abs(f_old), abs(f), 1.0):
                why = "ftol"
                break
    finally:
        if bar is not None:
            bar.close()

    status = {"maxiter": MAXITER, "callback": CALLBACK}.get(why, CONVERGED)
    result = _result_type()(
        x=x, fun=f, jac=g, nit=nit, nfev=objective.nfev, njev=objective.njev,
        success=status == CONVERGED, status=status, message=_MESSAGES[why],
    )
    if disp:
        print(result.message)
        print(f"         Current function value: {f:.6g}")
        print(f"         Iterations: {nit}")
        print(f"         Function evaluations: {objective.nfev}")
        print(f"         Gradient evaluations: {objective.njev}")
    return result


def scipy_adam(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None, constraints=(),
               callback=None, **options):
    """Adam as a custom method of ``scipy.optimize.minimize``:

        scipy.optimize.minimize(fun, x0, jac=grad, method=adamcore.scipy_adam,
                                options={"lr": 0.01, "maxiter": 5000})

    The options are :func:`adamcore.minimize`'s keywords and give the same iterates; SciPy's
    ``tol`` sets ``gtol`` unless ``gtol`` is given. SciPy turns ``jac=True`` into a cached
    gradient function, and finite-difference strings into ``None`` (forward differences here).
    Hessians are not used (Adam is first order: a warning says so); constraints other than
    bounds are refused. Unknown options are ignored with a warning, as SciPy's methods do.
    """
    if not _no_constraints(constraints):
        raise ValueError("adamcore.scipy_adam handles bounds but not general constraints; "
                         "use method='SLSQP' or 'trust-constr' for those")
    if hess is not None or hessp is not None:  # SciPy's convention for first-order methods
        warnings.warn("adamcore.scipy_adam is first order: hess and hessp are not used",
                      RuntimeWarning, stacklevel=3)
    tol = options.pop("tol", None)
    return minimize(fun, x0, args, jac=jac, bounds=bounds, tol=tol, callback=callback,
                    options=options or None)


_DEFAULTS = {
    name: p.default for name, p in inspect.signature(minimize).parameters.items()
    if p.kind is p.KEYWORD_ONLY
}
_OPTIONS = set(_DEFAULTS)


def _check_method(method) -> None:
    if method is None or method is scipy_adam:
        return
    if isinstance(method, str) and method.strip().lower() == "adam":
        return
    what = repr(method) if isinstance(method, str) else getattr(method, "__name__",
                                                                 type(method).__name__)
    raise ValueError(f"adamcore.minimize runs Adam only (method=None, 'adam' or "
                     f"adamcore.scipy_adam), got method={what}; for SciPy's methods call "
                     f"scipy.optimize.minimize(..., method={what})")


def _refuse_second_order(hess, hessp, constraints) -> None:
    for name, value in (("hess", hess), ("hessp", hessp)):
        if value is not None:
            raise ValueError(f"adamcore.minimize is first order (Adam) and does not use "
                             f"{name}; leave it out, or use scipy.optimize.minimize with a "
                             f"second-order method such as 'trust-exact' or 'Newton-CG'")
    if not _no_constraints(constraints):
        raise ValueError("adamcore.minimize handles bounds but not general constraints; use "
                         "scipy.optimize.minimize with method='SLSQP' or 'trust-constr'")


def _merge_options(given: dict, options) -> dict:
    """The keywords given plus SciPy's ``options`` dict; unknown options warn, as in SciPy."""
    try:
        options = dict(options)
    except (TypeError, ValueError):
        raise TypeError(f"options must be a dict of solver options, got "
                        f"{type(options).__name__}") from None
    both = sorted(set(given) & set(options))
    if both:
        raise TypeError(f"{', '.join(both)} given both as a keyword and in options; give "
                        f"each once")
    unknown = sorted(name for name in options if name not in _OPTIONS)
    if unknown:
        warnings.warn(f"Unknown solver options: {', '.join(map(str, unknown))}",
                      _optimize_warning(), stacklevel=4)
        for name in unknown:
            del options[name]
    return {**given, **options}


# ---------------------------------------------------------------------------------------------
class _Objective:
    """Evaluates ``fun`` and the gradient at an iterate, checks what they return, counts calls."""

    def __init__(self, fun, jac, args, x, box):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        if jac is None or jac is False:
            jac = "2-point"
        if isinstance(jac, str):
            if jac == "cs":
                raise ValueError("jac must be a callable, True, None, '2-point' or '3-point': "
                                 "jac='cs' (SciPy's complex-step differences) is not supported "
                                 "by adamcore.minimize; use '3-point' or give the gradient")
            if jac not in ("2-point", "3-point"):
                raise ValueError(f"jac must be a callable, True, None, '2-point' or '3-point', "
                                 f"got {jac!r}")
        elif jac is not True and not callable(jac):
            raise TypeError(f"jac must be a callable, True, None, '2-point' or '3-point', "
                            f"got {type(jac).__name__}")
        self.fun, self.jac, self.args = fun, jac, args
        self.shape, self.dtype = x.shape, x.dtype
        # 16-bit x: the core takes float32 gradients as they are, without rounding to 16 bits
        self.grad_dtypes = (x.dtype, np.dtype(np.float32)) if x.dtype == np.float16 else (x.dtype,)
        self.box = box
        self.nfev = self.njev = 0

    def __call__(self, x, nit: int):
        """(value, gradient) at iterate ``nit``; ``x`` is the read-only view of the iterate."""
        self.nfev += 1
        self.njev += 1
        jac = self.jac
        if jac is True:
            out = self.fun(x, *self.args)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError("with jac=True, fun must return (value, gradient); at iteration "
                                f"{nit} it returned {type(out).__name__}")
            f, g = self._value(out[0], nit), out[1]
        else:
            f = self._value(self.fun(x, *self.args), nit)
            if isinstance(jac, str):
                return f, self._differences(x, f, nit, central=jac == "3-point")
            g = jac(x, *self.args)
        return f, self._gradient(g, x, nit)

    def _value(self, f, nit: int, where: str = "") -> float:
        value = np.asarray(f)
        if value.size != 1:
            raise ValueError(f"fun must return a scalar; at iteration {nit}{where} it returned "
                             f"an array of shape {value.shape}")
        if value.dtype.kind not in "fiub":
            raise TypeError(f"fun must return a real number; at iteration {nit}{where} it "
                            f"returned {type(f).__name__} of dtype {value.dtype}")
        f = float(value.reshape(()))
        if not math.isfinite(f):
            raise FloatingPointError(
                f"fun returned {f} at iteration {nit}{where} (x0 is iteration 0, iteration k "
                f"the point after k Adam steps); a large lr or a point outside fun's domain "
                f"are common causes (bounds can keep x inside)")
        return f

    def _gradient(self, g, x, nit: int):
        g = np.asarray(g)
        if g.shape != self.shape:
            raise ValueError(f"the gradient at iteration {nit} has shape {g.shape} but x has "
                             f"shape {self.shape}; jac must return an array shaped like x")
        if g.dtype.kind not in "fiub":
            what = "complex" if g.dtype.kind == "c" else "not real numbers"
            raise TypeError(f"the gradient at iteration {nit} has dtype {g.dtype} ({what}); "
                            f"jac must return real numbers")
        if g.dtype not in self.grad_dtypes:
            g = g.astype(self.dtype)  # e.g. a float64 gradient of a float32 x: float32 steps
        elif np.may_share_memory(g, x):
            g = g.copy()  # e.g. jac = lambda x: x; the step must not read what it writes
        if not _all_finite(g):
            raise FloatingPointError(
                f"the gradient at iteration {nit} holds inf or NaN (fun there is finite); x0 is "
                f"iteration 0, iteration k the point after k Adam steps")
        return g

    def _differences(self, x, f0: float, nit: int, central: bool):
        """Forward (or central) differences of fun at x, each step inside the bounds."""
        point = np.array(x, order="C")  # a working copy, moved one coordinate at a time
        flat = point.reshape(-1)
        view = point.view()
        view.flags.writeable = False
        lo, hi = (b.reshape(-1) for b in self.box) if self.box is not None else (None, None)
        # the usual steps: sqrt(eps) one-sided, cbrt(eps) central, relative to |x| beyond 1
        scale = np.maximum(1.0, np.abs(flat))
        eps = np.finfo(self.dtype).eps
        one_sided = (eps ** 0.5 * scale).astype(self.dtype)
        two_sided = (eps ** (1 / 3) * scale).astype(self.dtype)
        grad = np.empty(flat.shape, self.dtype)
        where = " (a finite-difference point)"
        for i in range(flat.size):
            xi = flat[i]
            room_up = math.inf if hi is None else float(hi[i]) - float(xi)
            room_down = math.inf if lo is None else float(xi) - float(lo[i])
            h = two_sided[i]
            if central and h <= room_up and h <= room_down:
                flat[i] = xi + h
                up, f_up = flat[i], self._probe(view, nit, where)
                flat[i] = xi - h
                down, f_down = flat[i], self._probe(view, nit, where)
                grad[i] = (f_up - f_down) / (float(up) - float(down))
            else:  # one-sided, away from a bound, shorter where the box is narrower than a step
                h = min(float(one_sided[i]), max(room_up, room_down))
                flat[i] = xi + h if h <= room_up else xi - h
                if lo is not None:
                    flat[i] = min(max(flat[i], lo[i]), hi[i])  # rounding must not leave the box
                moved = float(flat[i]) - float(xi)
                # a variable fixed by lo == hi has no room to move: its projected gradient is 0
                grad[i] = (self._probe(view, nit, where) - f0) / moved if moved else 0.0
            flat[i] = xi
        return self._gradient(grad.reshape(self.shape), x, nit)

    def _probe(self, view, nit, where) -> float:
        self.nfev += 1
        return self._value(self.fun(view, *self.args), nit, where)


def _initial_point(x0) -> np.ndarray:
    try:
        x = np.asarray(x0)
    except (TypeError, ValueError) as e:
        raise TypeError(f"x0 must be an array of real numbers: {e}") from None
    kind = x.dtype.kind
    if kind == "c":
        raise TypeError(f"x0 is complex ({x.dtype}); adamcore.minimize works on real numbers: "
                        f"optimize the real and imaginary parts, e.g. z.view(np.float64)")
    if kind in "iu":
        x = x.astype(np.float64)
    elif kind != "f":
        raise TypeError(f"x0 must be an array of real numbers, got dtype {x.dtype}")
    elif x.dtype.type not in _DTYPES:
        raise TypeError(f"x0 has dtype {x.dtype}; adamcore.minimize takes float16, float32 or "
                        f"float64 (integers become float64)")
    if not np.isfinite(x).all():
        raise ValueError("x0 holds inf or NaN")
    return np.array(x, order="C")  # the optimizer's own copy: x0 is left alone


def _check_maxiter(maxiter) -> int:
    if isinstance(maxiter, float) and maxiter.is_integer():
        maxiter = int(maxiter)  # SciPy users write maxiter=1e4
    try:
        if isinstance(maxiter, bool):
            raise TypeError
        maxiter = operator.index(maxiter)
    except TypeError:
        raise TypeError(f"maxiter must be an integer >= 0, got {maxiter!r}") from None
    if maxiter < 0:
        raise ValueError(f"maxiter must be an integer >= 0, got {maxiter}")
    return maxiter


def _check_tol(name: str, tol) -> float:
    if tol is None:
        return 0.0
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number >= 0 or None, got {tol!r}") from None
    if not tol >= 0.0:
        raise ValueError(f"{name} must be a number >= 0 or None, got {tol!r}")
    return tol


def _check_bounds(bounds, x):
    """(lo, hi) arrays shaped like x in its dtype, or None where nothing is bounded."""
    if bounds is None:
        return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        lo, hi = (_bound_array(b, x, name) for b, name in ((bounds.lb, "lb"), (bounds.ub, "ub")))
    else:
        try:
            pairs = list(bounds)
        except TypeError:
            raise TypeError("bounds must be scipy.optimize.Bounds or a sequence of (lo, hi) "
                            f"pairs, got {type(bounds).__name__}") from None
        if len(pairs) != x.size:
            raise ValueError(f"bounds has {len(pairs)} (lo, hi) pairs but x0 has {x.size} "
                             f"elements (one pair per element, in C order)")
        lo, hi = np.empty(x.size), np.empty(x.size)
        for i, pair in enumerate(pairs):
            try:
                a, b = pair
                lo[i] = -np.inf if a is None else float(a)
                hi[i] = np.inf if b is None else float(b)
            except (TypeError, ValueError):
                raise ValueError(f"bounds[{i}] must be a pair (lo, hi) of numbers or None, got "
                                 f"{pair!r}") from None
        lo, hi = lo.reshape(x.shape), hi.reshape(x.shape)
    bad = np.flatnonzero(np.isnan(lo) | np.isnan(hi) | (lo > hi) | (lo == np.inf)
                         | (hi == -np.inf))
    if bad.size:
        i = bad[0]
        raise ValueError(f"bounds for element {i} are ({lo.flat[i]}, {hi.flat[i]}); each "
                         f"needs lo <= hi, no NaN, and a feasible value")
    if np.isneginf(lo).all() and np.isposinf(hi).all():
        return None
    return _round_inward(lo, x.dtype), _round_inward(hi, x.dtype, up=False)


def _bound_array(b, x, name):
    try:
        b = np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"Bounds.{name} must be numbers") from None
    if b.size == x.size and b.shape != x.shape and b.ndim == 1:
        return b.reshape(x.shape)  # one entry per element of a multi-dimensional x, in C order
    try:
        return np.array(np.broadcast_to(b, x.shape))
    except ValueError:
        raise ValueError(f"Bounds.{name} has shape {b.shape}, which does not fit x0's shape "
                         f"{x.shape}") from None


def _round_inward(b, dtype, up=True):
    """b in dtype, rounded toward the inside of the box where dtype cannot hold it exactly."""
    if dtype == np.float64:
        return b
    r = b.astype(dtype)
    outside = (r < b) if up else (r > b)  # compared in float64: exact
    toward = np.array(np.inf if up else -np.inf, dtype)
    return np.where(outside, np.nextafter(r, toward), r)


def _all_finite(g) -> bool:
    return _core.first_nonfinite([g]) < 0  # one vectorized pass, no temporary array


def _stationarity(x, g, l2: float, box) -> float:
    """max |gradient|, of fun plus the L2 penalty, projected onto the box as in L-BFGS-B."""
    if l2:
        g = g + l2 * x
    if box is not None:
        g = x - np.clip(x - g, *box)  # 0 where the gradient only pushes against an active bound
    return float(np.max(np.abs(g))) if g.size else 0.0


def _no_constraints(constraints) -> bool:
    return constraints is None or (isinstance(constraints, (list, tuple)) and not constraints)


def _callback_caller(callback):
    """A function (x, f, nit) -> stop? that calls ``callback`` by SciPy's convention."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        new_style = set(inspect.signature(callback).parameters) == {"intermediate_result"}
    except (TypeError, ValueError):  # no signature (some builtins): SciPy's legacy form
        new_style = False
    result_type = _result_type()

    def notify(x, f, nit) -> bool:
        try:
            if new_style:
                callback(intermediate_result=result_type(x=x.copy(), fun=f, nit=nit))
            else:
                callback(x.copy())
        except StopIteration:
            return True
        return False

    return notify


class _Progress:
    """A progress bar with the current loss: tqdm when installed, else a line on stderr."""

    def __init__(self, total: int, loss: float):
        self.total, self.count, self.loss, self.shown = total, 0, loss, 0.0
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.bar = None
            self.tty = sys.stderr.isatty()
        else:
            self.bar = tqdm(total=total, desc="adamcore.minimize", unit="it")

    def update(self, loss: float) -> None:
        self.count += 1
        self.loss = loss
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(1)
            if now - self.shown > 0.1:  # formatting the loss on every step would cost more
                self.bar.set_postfix_str(f"loss={loss:.6g}", refresh=False)
                self.shown = now
        elif now - self.shown > (0.2 if self.tty else 5.0):
            self._print()
            self.shown = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss={self.loss:.6g}", refresh=False)
            self.bar.close()
        else:
            self._print(final=True)

    def _print(self, final: bool = False) -> None:
        line = f"adamcore.minimize: {self.count}/{self.total} iterations, loss {self.loss:.6g}"
        # on a terminal one line is rewritten in place; in a log, a line every few seconds
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _Result(dict):
    """scipy.optimize.OptimizeResult's fields and attribute access, for use without SciPy."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __dir__(self):
        return list(self.keys())

    def __repr__(self) -> str:
        width = max(map(len, self), default=0) + 1
        return "\n".join(f"{k.rjust(width)}: {v!r}" for k, v in self.items())


def _result_type():
    try:
        from scipy.optimize import OptimizeResult
    except ImportError:
        return _Result
    return OptimizeResult


def _optimize_warning():
    try:
        from scipy.optimize import OptimizeWarning
    except ImportError:
        return RuntimeWarning
    return OptimizeWarning
