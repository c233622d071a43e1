"""Minimize the Rosenbrock function with Adam: adamcore.minimize, then through SciPy.

    python examples/rosenbrock.py

adamcore.minimize takes SciPy's arguments and returns a scipy.optimize.OptimizeResult;
adamcore.scipy_adam is the same optimizer as a custom method of scipy.optimize.minimize.
Adam is a first-order method made for noisy gradients: on a smooth, small problem like this
one a quasi-Newton method (BFGS) needs far fewer evaluations, as the last line shows.
"""

import numpy as np

import adamcore


def rosen(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rosen_der(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def show(name, res):
    x = np.array2string(np.asarray(res.x), precision=6)
    print(f"{name:<37} {x:<24} {res.fun:<10.2e} {res.nit:>5} {res.nfev:>5}  {res.success}")


def main():
    x0 = np.array([-1.2, 1.0])
    options = {"lr": 0.05, "maxiter": 5000, "gtol": 1e-6}
    print(f"{'Rosenbrock from (-1.2, 1)':<37} {'x':<24} {'f(x)':<10} {'nit':>5} {'nfev':>5}"
          "  success")

    show("adamcore.minimize", adamcore.minimize(rosen, x0, jac=rosen_der, **options))
    # float32 in, float32 out (and float32 arithmetic): a looser gtol suits its precision
    x32 = x0.astype(np.float32)
    show("adamcore.minimize, float32",
         adamcore.minimize(rosen, x32, jac=rosen_der, **{**options, "gtol": 1e-4}))
    box = [(-2.0, 0.8), (None, None)]
    show("adamcore.minimize, x[0] <= 0.8",
         adamcore.minimize(rosen, x0, jac=rosen_der, bounds=box, **options))

    try:
        from scipy import optimize
    except ImportError:
        print("SciPy is not installed: no scipy.optimize.minimize(method=adamcore.scipy_adam)")
        return
    show("scipy.optimize.minimize(scipy_adam)",
         optimize.minimize(rosen, x0, jac=rosen_der, method=adamcore.scipy_adam,
                           options=options))
    show("scipy.optimize.minimize(BFGS)",
         optimize.minimize(rosen, x0, jac=rosen_der, method="BFGS"))


if __name__ == "__main__":
    main()
