"""A PyTorch training loop with adamcore.torch.AdamW, next to torch.optim.AdamW.

    python examples/torch_training.py [--epochs 5]

adamcore.torch.AdamW is a drop-in torch.optim.Optimizer: the same constructor, zero_grad(),
step(closure=None) reading p.grad, param groups, state_dict and LR schedulers. Here it trains a
small MLP classifier on the data of the logistic-regression example, and torch.optim.AdamW
trains a copy from the same initial weights on the same minibatches: the two runs agree to
float32 rounding.
"""

import argparse
import copy
import sys
import time

try:
    import torch
except ImportError:
    sys.exit("this example needs PyTorch: pip install torch (or pip install 'adamcore[test]')")
from synthetic_data import make_classification

try:
    import adamcore.torch as adamcore_torch
except ImportError as e:
    sys.exit(f"this example needs adamcore.torch, which this adamcore does not have: {e}")


def train(model, opt, data, epochs, batch_size, seed):
    X, y = data
    steps = epochs * (len(y) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    generator = torch.Generator().manual_seed(seed)  # the same minibatches for every run
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for k in range(len(y) // batch_size):
            idx = order[k * batch_size:(k + 1) * batch_size]
            opt.zero_grad()
            loss = loss_fn(model(X[idx]).squeeze(1), y[idx])
            loss.backward()
            opt.step()
            scheduler.step()
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(model, data):
    X, y = data
    logits = model(X).squeeze(1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    return loss.item(), ((logits > 0) == (y > 0.5)).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    train_data, test_data = (tuple(map(torch.from_numpy, part))
                             for part in make_classification(seed=0))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(train_data[0].shape[1], 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    twin = copy.deepcopy(model)
    hyper = {"lr": 3e-3, "betas": (0.9, 0.999), "weight_decay": 1e-2}

    runs = [("adamcore.torch.AdamW", model, adamcore_torch.AdamW(model.parameters(), **hyper)),
            ("torch.optim.AdamW", twin, torch.optim.AdamW(twin.parameters(), **hyper))]
    print(f"MLP {sum(p.numel() for p in model.parameters())} parameters, {args.epochs} epochs "
          f"of {len(train_data[1]) // args.batch_size} minibatches")
    for name, net, opt in runs:
        seconds = train(net, opt, train_data, args.epochs, args.batch_size, seed=1)
        train_loss, train_acc = evaluate(net, train_data)
        test_loss, test_acc = evaluate(net, test_data)
        print(f"{name:<21} train loss {train_loss:.4f} accuracy {train_acc:.4f} | "
              f"test loss {test_loss:.4f} accuracy {test_acc:.4f} | {seconds:.2f} s")
    gap = max((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters()))
    print(f"largest difference between the two models' parameters: {gap:.1e}")


if __name__ == "__main__":
    main()
