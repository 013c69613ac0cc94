"""Throughput of ``rl.attacks.pgd`` against bare gradient passes and against torchattacks' PGD.

One PGD step costs one forward and one backward pass with respect to the input; everything
else (the signed step, the projection, the best-iterate bookkeeping) is elementwise. On the
same model and batch the script times

* ``rl.attacks.pgd`` with ``steps = k`` (Linf, random start, fixed step size),
* k bare forward + backward passes (cross-entropy, gradient with respect to the input,
  nothing else): the floor any PGD-k implementation pays,
* ``torchattacks.PGD`` with the same eps, step size, steps and random start (skipped with
  a message if torchattacks is not installed; install it with ``pip install --no-deps
  torchattacks``, since its pin ``requests~=2.25.1`` would downgrade requests),

alternately (the order rotates every round, the first round warms up and is not counted),
several times, and prints the median time of each and the ratios
(goals: pgd / bare passes <= 1.1, pgd / torchattacks <= 1.0).

    python benchmarks/pgd_throughput.py [--dataset digits] [--arch cnn] [--steps 10] [--batch-size 256] [--repeats 11]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import robustlab as rl


def bare_passes(model, x, y, steps):
    """The baseline: ``steps`` forward passes, cross-entropy and input gradients. Nothing else."""
    for _ in range(steps):
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y)
        torch.autograd.grad(loss, xg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--step-size", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--untrained", action="store_true", help="attack freshly initialised weights instead of the cached standard model")
    args = ap.parse_args(argv)

    device = rl.models.best_device()
    if args.untrained:
        model = rl.models.build(args.arch, args.dataset, seed=0).to(device)
    else:
        model, _ = rl.train.trained_model(args.dataset, args.arch, device=device, progress=False)
    model.eval()
    _, test = rl.data.load(args.dataset)
    x, y = test.x[:args.batch_size].to(device), test.y[:args.batch_size].to(device)
    k, eps, alpha = args.steps, args.eps, args.step_size

    runners = {
        "rl.attacks.pgd": lambda: rl.attacks.pgd(model, x, y, eps=eps, steps=k, step_size=alpha, seed=0),
        "bare passes": lambda: bare_passes(model, x, y, k),
    }
    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed (pip install --no-deps torchattacks): comparing with the bare passes only")
    else:
        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=k, random_start=True)
        runners["torchattacks.PGD"] = lambda: ta(x, y)

    names = list(runners)
    times = {name: [] for name in names}
    for r in range(args.repeats + 1):  # round 0 warms up and is not counted
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            runners[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r > 0:
                times[name].append(time.perf_counter() - start)

    print(f"data set {args.dataset}, {args.arch} ({'untrained' if args.untrained else 'standard model'}), batch {x.shape[0]}, "
          f"PGD-{k} Linf eps {eps} step {alpha}, device {device}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"  {name:17s} median {1000 * med[name]:8.2f} ms   (runs: {', '.join(f'{1000 * t:.1f}' for t in ts)})")
    ratios = {"bare passes": med["rl.attacks.pgd"] / med["bare passes"]}
    print(f"ratio rl.attacks.pgd / {k} bare forward+backward passes = {ratios['bare passes']:.3f}  (goal <= 1.1)")
    if "torchattacks.PGD" in med:
        ratios["torchattacks.PGD"] = med["rl.attacks.pgd"] / med["torchattacks.PGD"]
        print(f"ratio rl.attacks.pgd / torchattacks.PGD = {ratios['torchattacks.PGD']:.3f}  (goal <= 1.0)")
    return ratios


if __name__ == "__main__":
    main()
