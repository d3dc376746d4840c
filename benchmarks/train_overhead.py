"""Overhead of polyculture's training loop against a bare PyTorch loop, side by side.

Both train the same model (same initial weights) on the same MNIST-1D data with the same optimizer,
batch size and number of epochs; the bare loop does only permute / forward / backward / step. Our
loop adds the LR schedule, the per-epoch finiteness check, validation and best-weight tracking.
Prints samples/s of each and their ratio (ours / bare; 1.0 = no overhead).

    python benchmarks/train_overhead.py [--family cnn] [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from polyculture.data import DataSpec, build_task
from polyculture.train import TrainSpec, fit
from polyculture.zoo import ModelSpec, create_model


def bare_loop(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    n = len(y)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch + 1, batch):
            rows = order[start : start + batch]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="cnn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = build_task(DataSpec(name="mnist1d"))
    torch.manual_seed(0)
    initial = create_model(ModelSpec(family=args.family), task.input_shape, 10, task.modality)
    spec = TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, schedule="cosine")
    samples = (len(task.train) // args.batch_size) * args.batch_size * args.epochs
    device = torch.device("cpu")

    best_ours, best_bare = float("inf"), float("inf")
    for _ in range(args.repeats):  # interleaved, best of N: robust to background load
        model = copy.deepcopy(initial)
        start = time.perf_counter()
        bare_loop(model, task.train.x, task.train.y, args.epochs, args.batch_size, 1e-3)
        best_bare = min(best_bare, time.perf_counter() - start)

        model = copy.deepcopy(initial)
        start = time.perf_counter()
        fit(model, task.train, task.val, task.modality, spec, 0, device)
        best_ours = min(best_ours, time.perf_counter() - start)

    print(
        f"model: {args.family} ({sum(p.numel() for p in initial.parameters()):,} parameters), "
        f"{args.epochs} epochs x {len(task.train)} examples, batch {args.batch_size}, "
        f"{args.threads} thread(s), best of {args.repeats}"
    )
    print(f"bare PyTorch loop : {samples / best_bare:10.0f} samples/s")
    print(f"polyculture fit() : {samples / best_ours:10.0f} samples/s")
    print(f"ratio (ours/bare) : {best_bare / best_ours:10.3f}   (goal >= 0.9)")


if __name__ == "__main__":
    main()
