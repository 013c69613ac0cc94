"""Throughput of ``rl.train.fit`` against a minimal hand-written training loop.

Both train the same architecture from the same initial weights on the same in-memory
data with the same optimizer, batch size and number of epochs; they run alternately,
several times, and the script prints the median time of each and their ratio
(goal: rl.train.fit at most 1.2x the minimal loop).

    python benchmarks/train_throughput.py [--dataset digits] [--arch cnn] [--epochs 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import robustlab as rl


def minimal_loop(model, x, y, *, epochs, lr, batch_size, seed):
    """The baseline: shuffle, forward, cross-entropy, backward, Adam step. Nothing else."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--progress", action="store_true", help="show rl.train's progress bar while timing it")
    args = ap.parse_args(argv)

    torch.set_num_threads(torch.get_num_threads())
    train, _ = rl.data.load(args.dataset)
    device = rl.models.best_device()
    x, y = train.x.to(device), train.y.to(device)
    lr = 1e-3
    times = {"rl.train.fit": [], "minimal loop": []}
    for r in range(args.repeats + 1):  # the first round warms up and is not counted
        for name in (("rl.train.fit", "minimal loop") if r % 2 else ("minimal loop", "rl.train.fit")):
            model = rl.models.build(args.arch, args.dataset, seed=0).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if name == "rl.train.fit":
                rl.train.fit(model, (x, y), epochs=args.epochs, lr=lr, batch_size=args.batch_size, seed=0,
                             progress=args.progress)
            else:
                minimal_loop(model, x, y, epochs=args.epochs, lr=lr, batch_size=args.batch_size, seed=0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r > 0:
                times[name].append(time.perf_counter() - start)

    n = x.shape[0] * args.epochs
    print(f"data set {args.dataset}, {args.arch}, {x.shape[0]} examples x {args.epochs} epochs, "
          f"batch {args.batch_size}, device {device}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:14s} median {med:7.3f} s   {n / med:9.0f} examples/s   (runs: {', '.join(f'{t:.3f}' for t in ts)})")
    ratio = statistics.median(times["rl.train.fit"]) / statistics.median(times["minimal loop"])
    print(f"ratio rl.train.fit / minimal loop = {ratio:.3f}  (goal <= 1.2)")
    return ratio


if __name__ == "__main__":
    main()
