"""DSSN certification time against the bare forward passes of its offsets.

DSSN (``rl.smoothing.l1.certify_dssn``) evaluates the base classifier once per offset,
``L = floor(2 lam q)`` times per input; building each offset's representation (a table
lookup per coordinate), packing the rows into forward passes, counting the votes and
the gap radius are its overhead. The script times, alternately (the order rotates every
round, the first round warms up and is not counted):

1. ``certify_dssn`` on ``B`` grid inputs;
2. bare forward passes (argmax) of the same model over ``B * L`` inputs in batches of the
   same size, the batch made beforehand (the floor any implementation pays).

Goal: ratio certify / bare <= 1.1. Also printed: the fractional-Lp certifier
(``rl.smoothing.fractional.certify_fractional``) against its ``N`` bare passes.

    python benchmarks/dssn_offsets.py [--inputs 200] [--lam 0.866] [--q 16] [--batch-size 1000] [--repeats 5]
        [--threads 1] [--arch cnn]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import robustlab as rl
from robustlab.smoothing import fractional as FR
from robustlab.smoothing import l1 as L1
from _timing import bare_forward  # benchmarks/ is on the path of its scripts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--lam", type=float, default=L1.lam_from_sigma(0.5))
    ap.add_argument("--q", type=int, default=16)
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arch", default="cnn")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rl.config.set_progress(False)

    _, test = rl.data.load("digits")
    x = test.x[: args.inputs]
    model = rl.models.build(args.arch, "digits").eval()
    levels = L1.n_offsets(args.lam, args.q)
    design = FR.solve_design(args.q, 0.5, args.budget)
    rows = L1.quantize(torch.rand(args.batch_size, *x.shape[1:]), args.q)
    jobs = {
        "certify_dssn": lambda: L1.certify_dssn(model, x, lam=args.lam, q=args.q, batch_size=args.batch_size),
        "bare x L": lambda: bare_forward(model, rows, x.shape[0] * levels),
        "certify_fractional": lambda: FR.certify_fractional(model, x, design=design, p=0.5,
                                                            batch_size=args.batch_size),
        "bare x N": lambda: bare_forward(model, rows, x.shape[0] * design.n_samples),
    }
    times = {k: [] for k in jobs}
    names = list(jobs)
    for r in range(args.repeats + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t = time.perf_counter()
            jobs[k]()
            if r:
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"digits, {args.arch}, {x.shape[0]} inputs, q={args.q}, lam={args.lam:.3f}: L={levels} offsets; "
          f"fractional p=1/2 budget {args.budget}: N={design.n_samples} positions; {args.threads} thread(s), "
          f"batch {args.batch_size}, median of {args.repeats}")
    print(f"  certify_dssn        {med['certify_dssn']:.3f} s   bare forward x L  {med['bare x L']:.3f} s   "
          f"ratio {med['certify_dssn'] / med['bare x L']:.3f} (goal <= 1.1)")
    print(f"  certify_fractional  {med['certify_fractional']:.3f} s   bare forward x N  {med['bare x N']:.3f} s   "
          f"ratio {med['certify_fractional'] / med['bare x N']:.3f}")
    print(f"  per input: DSSN {1e3 * med['certify_dssn'] / x.shape[0]:.2f} ms, "
          f"fractional {1e3 * med['certify_fractional'] / x.shape[0]:.2f} ms")


if __name__ == "__main__":
    main()
