// multi_tensor.cpp: the same cubic fit as a model of two float32 tensors, a bias and three
// slopes, both stepped by AdamW in one adamcore call per step (adamcore_adam_step_multi_f32:
// one parallel region for all of a model's tensors).
//
// The test suite repeats this fit with adamcore.AdamW on two float32 arrays: same bits.
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <adamcore/adamcore.h>

#include "cubic_data.h"

namespace {

// Turns adamcore's return code into an exception carrying its message.
void check(int rc, const char* call) {
    if (rc != ADAMCORE_OK) throw std::runtime_error(std::string(call) + ": " + adamcore_last_error());
}

// A parameter, its gradient and AdamW's state for it.
struct Tensor {
    explicit Tensor(size_t n) : value(n), grad(n), exp_avg(n), exp_avg_sq(n) {}
    std::vector<float> value, grad, exp_avg, exp_avg_sq;
};

// AdamW over a fixed list of tensors. The pointer tables are built once: the vectors never
// reallocate, so each step is a single call.
class AdamW {
public:
    AdamW(std::vector<Tensor*> tensors, double lr, double weight_decay) {
        hp_ = adamcore_hparams_default();
        hp_.lr = lr;
        hp_.weight_decay = weight_decay;
        hp_.flags = ADAMCORE_DECOUPLED_WEIGHT_DECAY;
        for (Tensor* t : tensors) {
            params_.push_back(t->value.data());
            grads_.push_back(t->grad.data());
            exp_avgs_.push_back(t->exp_avg.data());
            exp_avg_sqs_.push_back(t->exp_avg_sq.data());
            lengths_.push_back(static_cast<int64_t>(t->value.size()));
        }
    }

    void step() {
        hp_.step = ++steps_taken_;  // Adam's bias correction reads the 1-based step
        check(adamcore_adam_step_multi_f32(params_.data(), grads_.data(), exp_avgs_.data(),
                                           exp_avg_sqs_.data(), nullptr, lengths_.data(),
                                           params_.size(), &hp_),
              "adamcore_adam_step_multi_f32");
    }

private:
    adamcore_hparams hp_;
    int64_t steps_taken_ = 0;
    std::vector<float*> params_, exp_avgs_, exp_avg_sqs_;
    std::vector<const float*> grads_;
    std::vector<int64_t> lengths_;
};

}  // namespace

int main() try {
    static double features[N_SAMPLES][N_COEFS];
    static double targets[N_SAMPLES];
    cubic_make_data(features, targets);

    Tensor bias(1), slopes(N_COEFS - 1);
    AdamW opt({&bias, &slopes}, /*lr=*/0.05, /*weight_decay=*/0.01);

    double coefs[N_COEFS], grad[N_COEFS], loss = 0.0;
    // Reads the model's float32 values as the coefficient vector, in float64.
    auto gather = [&] {
        coefs[0] = bias.value[0];
        for (int j = 1; j < N_COEFS; ++j) coefs[j] = slopes.value[j - 1];
    };
    for (int step = 1; step <= 500; ++step) {
        gather();
        loss = cubic_loss_and_grad(features, targets, coefs, grad);
        if (step == 1 || step % 100 == 0) std::printf("step %4d  loss %.6e\n", step, loss);
        bias.grad[0] = static_cast<float>(grad[0]);
        for (int j = 1; j < N_COEFS; ++j) slopes.grad[j - 1] = static_cast<float>(grad[j]);
        opt.step();
    }
    gather();
    std::printf("bias = %.9g\n", bias.value[0]);
    for (int j = 1; j < N_COEFS; ++j) std::printf("slope%d = %.9g\n", j, slopes.value[j - 1]);
    std::printf("final loss = %.17g\n", cubic_loss_and_grad(features, targets, coefs, grad));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
}
