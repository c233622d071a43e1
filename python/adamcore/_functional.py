"""adamcore.adam_step: one update of one parameter, with the state in the caller's hands."""

from __future__ import annotations

from . import _arrays, _engine, _hparams, _lowp, _scalars, _validation


def adam_step(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    *,
    step,
    lr,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    decoupled_weight_decay=False,
    decouple_lr=False,
    max_lr=None,
    amsgrad=False,
    max_exp_avg_sq=None,
    maximize=False,
    kahan_summation=False,
    compensation=None,
    stochastic_rounding=False,
    rounding_seed=0,
):
    """Updates ``param``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``) for update number
    ``step`` (1-based), with the formula of :class:`adamcore.Adam`.

    ``lr`` is this step's learning rate, or a schedule ``count -> lr`` evaluated at ``step - 1``.
    The state arrays must be like ``param`` (library, device, shape) in its state dtype: float32
    for 16-bit parameters, else the parameter's. Arrays are updated in place where the library
    allows; returns ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq or None)``, which are new
    arrays for immutable libraries (JAX).

    Low precision (docs/update.md): the state arrays may also be in the param's dtype or in
    bfloat16 (float16/float32 params); ``kahan_summation`` updates ``compensation`` (the
    param's dtype and shape, zeros at the first step) in place; ``stochastic_rounding`` rounds
    a bfloat16 param from the stream ``rounding_seed * 2**32`` (that of param 0 of an optimizer
    with the same ``rounding_seed``).
    """
    group = {
        "lr": lr,
        "betas": (beta1, beta2),
        "eps": eps,
        "weight_decay": weight_decay,
        "decoupled_weight_decay": decoupled_weight_decay,
        "decouple_lr": decouple_lr,
        "max_lr": max_lr,
        "amsgrad": amsgrad,
        "maximize": maximize,
        "kahan_summation": kahan_summation,
        "stochastic_rounding": stochastic_rounding,
        "rounding_seed": rounding_seed,
    }
    if _arrays.is_array(exp_avg) and _arrays.is_array(param):
        state = _arrays.dtype_name(exp_avg.dtype)
        if state != _arrays.state_dtype_name(_arrays.dtype_name(param.dtype)):
            group["state_dtype"] = state  # checked against the param's dtype by the engine
    _hparams.check_group(group)
    step = _scalars.step_index("step", step)
    _validation.check_param(0, param)
    _validation.check_grad(0, param, grad)
    work = _engine.Work(0, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None,
                        group, step, compensation if kahan_summation else None)
    (new,) = _engine.general_step([work])
    if new is not None:
        return new
    return param, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None
