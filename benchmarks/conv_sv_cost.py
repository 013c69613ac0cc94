"""The CONV-SV bound's cost against the exact spectral norm's, per convolution layer.

``rl.lipschitz.conv.conv_sv_bound`` takes four exact matrix 2-norms of reshapes of the
kernel (at most ``(c k) x (c k)``), independent of the input size. The exact norm needs the
layer at its input size: ``exact_conv_norm`` by the FFT formula (circular padding, one
``c x c`` SVD per frequency) or by Lanczos iteration with conv2d / conv_transpose2d (zero
padding). The script times each on random 3x3 kernels of growing width and input size,
alternately (the order rotates, the first round warms up), and prints the ratios.

Baseline (Singla and Feizi's bound_comparison notebook, ImageNet ResNet-18 on a GPU):
about 0.035 s per layer for the bound against 8-33 s for the exact FFT/SVD, a ratio of
roughly 200-1000.

    python benchmarks/conv_sv_cost.py [--widths 16 32 64 128] [--sizes 8 16 32] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from robustlab.lipschitz import conv as C
from _timing import rounds  # benchmarks/ is on the path of its scripts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k = args.kernel
    print(f"random {k}x{k} kernels (c x c), float64, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'c':>5s} {'n':>4s} {'bound':>9s} {'FFT (circ.)':>12s} {'Lanczos (zero)':>15s} "
          f"{'FFT/bound':>10s} {'Lanczos/bound':>14s} {'bound/exact':>12s}")
    for c in args.widths:
        K = torch.randn(c, c, k, k, generator=torch.Generator().manual_seed(c), dtype=torch.float64)
        for n in args.sizes:
            shape = (c, n, n)
            med = rounds({
                "bound": lambda: C.conv_sv_bound(K),
                "fft": lambda: C.exact_conv_norm(K, shape, padding=k // 2, padding_mode="circular"),
                "lanczos": lambda: C.exact_conv_norm(K, shape, padding=k // 2),
            }, args.repeats)
            looseness = C.conv_sv_bound(K).value / C.exact_conv_norm(K, shape, padding=k // 2).value
            print(f"{c:5d} {n:4d} {1e3 * med['bound']:7.2f}ms {1e3 * med['fft']:10.2f}ms {1e3 * med['lanczos']:13.2f}ms "
                  f"{med['fft'] / med['bound']:10.1f} {med['lanczos'] / med['bound']:14.1f} {looseness:12.2f}")
    print("baseline (paper's notebook, ResNet-18 layers at 56x56-224x224 on a GPU): exact / bound ~ 200-1000")


if __name__ == "__main__":
    main()
