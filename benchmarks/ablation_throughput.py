"""Throughput of randomized-ablation sampling against bare forward passes of the same base model.

Certifying an input by randomized ablation (Levine and Feizi, 2020, arXiv 1911.09272)
costs ``n`` forward passes of the base classifier on ablated copies. Drawing each copy's
kept-pixel set from the input's own seeded stream, building the ablated input
``(x * m, m)``, encoding it and counting the votes is the overhead of
``rl.smoothing.ablation.sample_counts`` (the shared engine,
:mod:`robustlab.smoothing.sampling`, with :class:`~robustlab.smoothing.ablation.AblationNoise`).
The script times, alternately (the order rotates every round; the first round warms up
and is not counted):

1. ``sample_counts`` on ``B`` inputs with ``n`` ablated copies each;
2. bare forward passes of the same :class:`~robustlab.smoothing.ablation.AblatedClassifier`
   over the same number (``B * n``) of ablated inputs made beforehand, in batches of the
   same size, with the argmax (the floor any implementation pays).

Goal: throughput ratio bare / sample_counts time >= 0.9.

    python benchmarks/ablation_throughput.py [--dataset digits] [--arch cnn] [--k 10] [--inputs 64]
        [--n 2000] [--batch-size 1000] [--repeats 5] [--threads 1]

The weights do not change the cost: the model is freshly initialised (``rl.smoothing.ablation.build``).
"""

from __future__ import annotations

import argparse

import torch

import robustlab as rl
from robustlab.smoothing import ablation as A
from _timing import bare_forward, rounds  # benchmarks/ is on the path of its scripts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--k", type=int, default=A.DIGITS_K)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = rl.models.best_device()
    model = A.build(args.arch, args.dataset).to(device).eval()
    meta = rl.data.info(args.dataset)
    x = torch.rand(args.inputs, *meta.shape, generator=torch.Generator().manual_seed(0)).to(device)
    total = args.inputs * args.n
    noise = A.AblationNoise(args.k)
    ablated = noise.sample(x[0], args.batch_size, torch.Generator(device=device).manual_seed(0))

    times = rounds({
        "sample_counts": lambda: A.sample_counts(model, x, args.n, k=args.k, batch_size=args.batch_size,
                                                 progress=False),
        "bare forward": lambda: bare_forward(model, ablated, total),
    }, args.repeats)
    d = meta.shape[1] * meta.shape[2]
    print(f"randomized ablation, {args.dataset} ({d} pixels, k = {args.k}), {args.arch}, {device}, "
          f"{args.threads} thread(s): {args.inputs} inputs x {args.n} copies = {total} forward passes, "
          f"batch {args.batch_size}, median of {args.repeats}")
    for name, t in times.items():
        print(f"  {name:<14s} {t:8.3f} s   {total / t:12,.0f} inputs/s")
    ratio = times["bare forward"] / times["sample_counts"]
    print(f"  throughput ratio sample_counts / bare forward: {ratio:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
