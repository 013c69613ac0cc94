"""Throughput of column smoothing (``rl.smoothing.patch.certify``) against bare forward passes of its bands.

Certifying ``B`` images by column smoothing costs ``W`` forward passes of the base classifier per
image, one per band. The floor any implementation pays is those ``B * W`` forward passes on
bands encoded beforehand; the overhead of the package is encoding each band, packing many images
into each forward pass (:func:`robustlab.smoothing.sampling.enumerate_votes`), turning the
softmax scores into threshold votes (several classes per band when ``theta <= 1/2``), counting
and certifying. The script times, alternately (the order rotates every round, the first round
warms up and is not counted), for each threshold:

1. ``certify(model, x, kind="column", size=s, theta=theta, batch_size=bs)`` on ``B`` images;
2. bare forward passes of the base model over the same ``B * W`` encoded bands, made
   beforehand, in batches of the same size ``bs`` (plus the argmax).

Goal: certify time / bare time <= 1.1. Printed: the median seconds of each, the ratio, and the
cost per image.

    python benchmarks/column_smoothing.py [--dataset digits] [--arch cnn] [--inputs 360] [--size 2]
        [--thetas none 0.3 0.6] [--batch-size 1000] [--repeats 5] [--threads 1]

The base model's weights do not change the cost: the script uses freshly initialised weights of
the profile architecture with the encoding's ``2C`` input channels (``--dataset mnist`` or
``cifar10`` needs no download: the images are random).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import robustlab as rl
from robustlab.smoothing import patch as P


@torch.no_grad()
def bare_forward(model, bands, batch_size):
    """The base model on every encoded band, in batches of ``batch_size``: nothing else."""
    for i in range(0, bands.shape[0], batch_size):
        model(bands[i:i + batch_size]).argmax(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--inputs", type=int, default=360)
    parser.add_argument("--size", type=int, default=2)
    parser.add_argument("--thetas", nargs="+", default=["none", "0.3", "0.6"])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    rl.config.set_threads(args.threads)
    rl.config.set_progress(False)
    meta = rl.data.info(args.dataset)
    model = P.build_base(args.arch, args.dataset).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.inputs, *meta.shape, generator=gen)
    family = P.ColumnBands(args.size, width=meta.shape[2], height=meta.shape[1])
    # the bands in the order enumerate_votes packs them (all images under band 0, then band 1, ...)
    bands = torch.cat([family.apply(x, t) for t in range(len(family))])
    print(f"column smoothing, {args.dataset} {tuple(meta.shape)}, {args.arch}, s = {args.size}, "
          f"{args.inputs} images x {len(family)} bands = {bands.shape[0]} forward rows, batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.repeats} rounds")
    print(f"{'theta':>6} {'certify s':>10} {'bare s':>9} {'ratio':>7} {'ms / image':>11}  goal <= 1.1")
    for name in args.thetas:
        theta = None if name.lower() == "none" else float(name)
        jobs = {
            "certify": lambda: P.certify(model, x, kind="column", size=args.size, theta=theta,
                                         batch_size=args.batch_size),
            "bare": lambda: bare_forward(model, bands, args.batch_size),
        }
        times = {k: [] for k in jobs}
        order = list(jobs)
        for r in range(args.repeats + 1):
            order = order[1:] + order[:1]
            for k in order:
                start = time.perf_counter()
                jobs[k]()
                if r:
                    times[k].append(time.perf_counter() - start)
        cert_s, bare_s = statistics.median(times["certify"]), statistics.median(times["bare"])
        print(f"{str(theta):>6} {cert_s:10.4f} {bare_s:9.4f} {cert_s / bare_s:7.3f} "
              f"{1000 * cert_s / args.inputs:11.3f}")


if __name__ == "__main__":
    main()
