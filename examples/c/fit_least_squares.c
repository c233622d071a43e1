/* fit_least_squares.c: fits a cubic to noisy samples with Adam, through adamcore's C ABI.
 *
 *   cmake -S examples/c -B build-examples -Dadamcore_DIR="$(python -m adamcore --cmake-dir)"
 *   cmake --build build-examples && ./build-examples/fit_least_squares
 *
 * The test suite runs this and repeats the fit with adamcore.Adam: the numbers agree bit for bit.
 */
#include <stdio.h>

#include <adamcore/adamcore.h>

#include "cubic_data.h"

enum { STEPS = 500 };

int main(void) {
    /* Refuse a library whose ABI differs from the header's (before 1.0: major.minor). */
    if (adamcore_version() / 100 != ADAMCORE_VERSION / 100) {
        fprintf(stderr, "libadamcore %s does not match adamcore.h %s\n",
                adamcore_version_string(), ADAMCORE_VERSION_STRING);
        return 1;
    }
    printf("adamcore %s, SIMD level %s, %d threads\n", adamcore_version_string(),
           adamcore_simd_level(), adamcore_get_num_threads());

    static double features[N_SAMPLES][N_COEFS];
    static double targets[N_SAMPLES];
    cubic_make_data(features, targets);

    /* The parameters and Adam's state, all float64: the step computes in float64. */
    double coefs[N_COEFS] = {0}, grad[N_COEFS], exp_avg[N_COEFS] = {0}, exp_avg_sq[N_COEFS] = {0};
    adamcore_hparams hp = adamcore_hparams_default();
    hp.lr = 0.05;

    for (int step = 1; step <= STEPS; ++step) {
        const double loss = cubic_loss_and_grad(features, targets, coefs, grad);
        if (step == 1 || step % 100 == 0) printf("step %4d  loss %.6e\n", step, loss);
        hp.step = step; /* the caller counts the steps: Adam's bias correction reads it */
        if (adamcore_adam_step_f64(coefs, grad, exp_avg, exp_avg_sq, NULL, N_COEFS, &hp) != 0) {
            fprintf(stderr, "adamcore_adam_step_f64: %s\n", adamcore_last_error());
            return 1;
        }
    }

    printf("fitted coefficients of 1, x, x^2, x^3 (truth 0.5, -1, 2, 0.25):\n");
    for (int j = 0; j < N_COEFS; ++j) printf("  c%d = %.17g\n", j, coefs[j]);
    printf("final loss = %.17g\n", cubic_loss_and_grad(features, targets, coefs, grad));
    return 0;
}
