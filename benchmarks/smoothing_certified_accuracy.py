"""Certified accuracy of Gaussian smoothing on the digits, next to Cohen et al.'s CIFAR-10 numbers.

For each sigma the base classifier is the profile's CNN trained with Gaussian noise of
that sigma (``rl.training.robust_model(method="noise", sigma=...)``, cached on disk), and
``rl.smoothing.gaussian.certify`` certifies the test inputs with ``n0 = 100``,
``n = 10,000`` and ``alpha = 0.001``. The script prints, per sigma: the base model's
clean accuracy, the abstain rate, the certified accuracy at the radii 0 / 0.25 / 0.5 /
0.75 / 1.0 (L2, pixel units), the largest radius ``n`` samples can certify, and the
published CIFAR-10 numbers at the same sigma and radii for scale (Cohen et al. 2019,
n = 100,000; CIFAR-10 inputs have 3,072 dimensions, the digits 64, so the numbers are a
scale reference, not a comparison).

    python benchmarks/smoothing_certified_accuracy.py [--sigmas 0.25 0.5] [--n 10000] [--inputs 0 (all)]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

import robustlab as rl
from robustlab.smoothing import gaussian as G

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
# Cohen, Rosenfeld and Kolter (2019), CIFAR-10, ResNet-110, n = 100,000, alpha = 0.001.
PUBLISHED_CIFAR10 = {0.25: {0.25: 0.60, 0.5: 0.43, 0.75: 0.27},
                     0.5: {0.25: 0.55, 0.5: 0.41, 0.75: 0.32, 1.0: 0.23}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--inputs", type=int, default=0, help="certify this many test inputs (seeded subset; 0: all)")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    prof = rl.profile()
    _, test = rl.data.load()
    if args.inputs:
        test = rl.data.subset(test, args.inputs, seed=0)
    print(f"profile {prof.name}, data set {rl.data.info().name}: {len(test.y)} test inputs, n0 = {args.n0}, "
          f"n = {args.n:,}, alpha = {args.alpha}, device {rl.models.best_device()}")
    header = "  ".join(f"r={r:<5g}" for r in RADII)
    for sigma in args.sigmas:
        start = time.perf_counter()
        model, hist = rl.training.robust_model(method="noise", sigma=sigma)
        trained = time.perf_counter() - start
        clean = rl.train.evaluate(model, test)
        start = time.perf_counter()
        cert = G.certify(model, test.x, sigma=sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                         batch_size=args.batch_size, seed=0)
        seconds = time.perf_counter() - start
        acc = cert.certified_accuracy(test.y, RADII)
        print(f"\nsigma = {sigma}: base model (noise-trained, {trained:.0f} s to train or load) clean accuracy "
              f"{clean:.1%}; abstain {cert.abstained.float().mean():.1%}; largest certifiable radius "
              f"{G.max_radius(args.n, args.alpha, sigma):.2f}; certify {seconds:.1f} s "
              f"({seconds / len(test.y) * 1e3:.0f} ms per input)")
        print(f"  {'':24s}{header}")
        print(f"  {'digits (this run)':24s}" + "  ".join(f"{a:7.1%}" for a in acc))
        pub = PUBLISHED_CIFAR10.get(sigma, {})
        print(f"  {'CIFAR-10 (Cohen et al.)':24s}" + "  ".join(f"{pub[r]:7.0%}" if r in pub else f"{'-':>7s}"
                                                           for r in RADII))


if __name__ == "__main__":
    main()
