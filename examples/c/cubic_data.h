/* cubic_data.h: the examples' problem, a cubic fitted to noisy samples by least squares.
 *
 * Deterministic (a fixed-seed LCG makes the noise), so every run prints the same numbers and the
 * test suite can repeat the fit with adamcore's Python API. Plain C, also included from C++.
 */
#ifndef ADAMCORE_EXAMPLE_CUBIC_DATA_H
#define ADAMCORE_EXAMPLE_CUBIC_DATA_H

#include <stdint.h>

enum { N_SAMPLES = 64, N_COEFS = 4 };

/* Uniform noise in [-0.05, 0.05) from a 32-bit linear congruential generator. */
static inline double cubic_noise(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (*state / 4294967296.0 - 0.5) * 0.1;
}

/* Samples x in [-1, 1]; features 1, x, x^2, x^3; targets from the cubic 0.5 - x + 2x^2 + 0.25x^3
 * plus noise. */
static inline void cubic_make_data(double features[N_SAMPLES][N_COEFS], double targets[N_SAMPLES]) {
    const double truth[N_COEFS] = {0.5, -1.0, 2.0, 0.25};
    uint32_t state = 12345u;
    for (int i = 0; i < N_SAMPLES; ++i) {
        const double x = -1.0 + 2.0 * i / (N_SAMPLES - 1);
        double power = 1.0, target = 0.0;
        for (int j = 0; j < N_COEFS; ++j) {
            features[i][j] = power;
            target += truth[j] * power;
            power *= x;
        }
        targets[i] = target + cubic_noise(&state);
    }
}

/* Mean squared error of coefficients w and its gradient, 2/N * X^T (X w - y). */
static inline double cubic_loss_and_grad(const double features[N_SAMPLES][N_COEFS],
                                         const double targets[N_SAMPLES],
                                         const double w[N_COEFS], double grad[N_COEFS]) {
    double loss = 0.0;
    for (int j = 0; j < N_COEFS; ++j) grad[j] = 0.0;
    for (int i = 0; i < N_SAMPLES; ++i) {
        double residual = 0.0;
        for (int j = 0; j < N_COEFS; ++j) residual += features[i][j] * w[j];
        residual -= targets[i];
        loss += residual * residual;
        for (int j = 0; j < N_COEFS; ++j) grad[j] += features[i][j] * residual;
    }
    for (int j = 0; j < N_COEFS; ++j) grad[j] *= 2.0 / N_SAMPLES;
    return loss / N_SAMPLES;
}

#endif /* ADAMCORE_EXAMPLE_CUBIC_DATA_H */
