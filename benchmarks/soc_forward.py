"""An SOC layer's forward time as a multiple of one convolution of the same shape.

A skew orthogonal convolution (``rl.lipschitz.soc.SOCConv2d``) evaluates the Taylor series
of :math:`\\exp(J)x` with ``T`` terms, one convolution each, plus the skew filter, its
normalization and the additions. So its forward pass should cost about ``T`` convolutions.
The script times, alternately (the order rotates every round, the first round warms up and
is not counted):

1. the SOC layer's forward pass in eval mode (``terms_eval`` terms, no gradients) and in
   training mode (``terms_train`` terms, forward and backward);
2. one ``F.conv2d`` with a ``c x c x k x k`` filter on the same batch (forward; forward and
   backward for the training row).

Goal: eval ratio close to ``T`` (within about 1.2 T).

    python benchmarks/soc_forward.py [--channels 32] [--size 8] [--batch 256] [--terms-eval 12]
        [--terms-train 5] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from robustlab.lipschitz import soc as S
from _timing import rounds  # benchmarks/ is on the path of its scripts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--terms-eval", type=int, default=12)
    ap.add_argument("--terms-train", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c, k = args.channels, args.kernel
    layer = S.SOCConv2d(c, c, k, terms_train=args.terms_train, terms_eval=args.terms_eval)
    x = torch.rand(args.batch, c, args.size, args.size)
    weight = torch.randn(c, c, k, k, requires_grad=True)
    xg = x.clone().requires_grad_(True)

    def soc_eval():
        layer.eval()
        with torch.no_grad():
            layer(x)

    def conv_eval():
        with torch.no_grad():
            F.conv2d(x, weight, padding=k // 2)

    def soc_train():
        layer.train()
        layer(xg).sum().backward()

    def conv_train():
        F.conv2d(xg, weight, padding=k // 2).sum().backward()

    med = rounds({"soc eval": soc_eval, "conv eval": conv_eval, "soc train": soc_train, "conv train": conv_train},
                 args.repeats)
    print(f"SOC layer {c}x{c}x{k}x{k} on a batch of {args.batch} {args.size}x{args.size} inputs, "
          f"{args.threads} thread(s), median of {args.repeats}")
    for mode, terms in (("eval", args.terms_eval), ("train", args.terms_train)):
        what = "forward" if mode == "eval" else "forward + backward"
        ratio = med[f"soc {mode}"] / med[f"conv {mode}"]
        print(f"  {mode:5s} ({what}, T = {terms:2d}): SOC {1e3 * med[f'soc {mode}']:7.2f} ms   one conv "
              f"{1e3 * med[f'conv {mode}']:6.2f} ms   ratio {ratio:5.2f}   baseline T = {terms}")


if __name__ == "__main__":
    main()
