"""Throughput of the sampling engine (Gaussian smoothing, PixelDP) against bare forward
passes, and batched CERTIFY against certifying one input at a time.

Smoothing an input costs ``n`` forward passes of the base classifier on noisy copies;
drawing each input's noise from its own stream, adding it, taking the argmax (or the
softmax) and counting the votes is the overhead of the engine
(:mod:`robustlab.smoothing.sampling`). On the same model the script times, alternately
(the order rotates every round, the first round warms up and is not counted), several times:

1. ``rl.smoothing.gaussian.sample_counts`` on ``B`` inputs with ``n`` samples each, and
   bare forward passes of the base model over the same number (``B * n``) of noisy inputs,
   in batches of the same size, the noisy batch made beforehand (the floor any smoothing
   implementation pays). Goal: throughput ratio bare / sample_counts time >= 0.9.
2. ``rl.smoothing.dp.expected_scores`` (softmax scores) of a PixelDP network of the same
   architecture, and bare forward passes of that network over ``B * n`` inputs in batches
   of the same size (its noise layer drawing from torch's global generator, as in
   training: the first layer, the noise on its output and the rest, nothing else).
   Goal: ratio >= 0.9. Printed beside it: the layers after the noise alone on noisy
   representations made beforehand (a floor that leaves out drawing the noise).
3. ``rl.smoothing.gaussian.certify`` on ``B`` inputs at once; the same function called on
   one input at a time; and a loop written the way Cohen et al.'s reference ``core.py``
   is (one image at a time, the image repeated into batches, votes counted by a Python
   loop over the predictions). Printed as seconds per input and ratios.

    python benchmarks/smoothing_throughput.py [--dataset digits] [--arch cnn] [--inputs 64] [--n 2000]
        [--certify-n 100 1000] [--batch-size 1000] [--repeats 5] [--threads 1] [--skip-certify]

The base model's weights do not change the cost; the script uses freshly initialised
weights of the profile architecture (``--dataset cifar10`` needs no download either).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import robustlab as rl
from robustlab.smoothing import dp
from robustlab.smoothing import gaussian as G
from _timing import bare_forward, rounds, timed  # benchmarks/ is on the path of its scripts


@torch.no_grad()
def reference_style_certify(model, x, *, sigma, n0, n, alpha, batch_size):
    """CERTIFY as the reference code runs it: one image at a time, the image repeated into
    batches, votes counted with a Python loop. Same statistics as ``G.certify``."""
    from scipy.stats import norm

    device = rl.models.device_of(model)
    k = None
    radii, preds = [], []
    for i in range(x.shape[0]):
        img = x[i].to(device)

        def counts_of(num):
            nonlocal k
            counts = None
            remaining = num
            while remaining > 0:
                this = min(batch_size, remaining)
                remaining -= this
                batch = img.repeat((this,) + (1,) * img.dim())
                predictions = model(batch + torch.randn_like(batch) * sigma).argmax(1)
                arr = predictions.cpu().numpy()
                if counts is None:
                    k = int(model(img[None]).shape[1])
                    counts = np.zeros(k, dtype=int)
                for idx in arr:
                    counts[idx] += 1
            return counts

        c_hat = int(counts_of(n0).argmax())
        n_a = int(counts_of(n)[c_hat])
        p_lower = G.clopper_pearson(n_a, n, alpha)
        if p_lower < 0.5:
            preds.append(G.ABSTAIN)
            radii.append(0.0)
        else:
            preds.append(c_hat)
            radii.append(sigma * norm.ppf(p_lower))
    return preds, radii


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--inputs", type=int, default=64, help="inputs smoothed together (B)")
    ap.add_argument("--n", type=int, default=2000, help="samples per input for the throughput comparison")
    ap.add_argument("--certify-n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--certify-inputs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip-certify", action="store_true", help="only the throughput comparisons 1 and 2")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = rl.models.best_device()
    model = rl.models.build(args.arch, args.dataset, seed=0).to(device).eval()
    meta = rl.data.info(args.dataset)
    x = torch.rand((args.inputs,) + tuple(meta.shape), generator=torch.Generator().manual_seed(0))
    total = args.inputs * args.n
    noisy = (x[:1].to(device) + args.sigma * torch.randn((args.batch_size,) + tuple(meta.shape), device=device))
    print(f"device {device}, {torch.get_num_threads()} CPU threads, {args.arch} on {meta.name} {tuple(meta.shape)}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, batch {args.batch_size}")

    def sync(fn):
        def run():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    t = rounds({
        "sample_counts": sync(lambda: G.sample_counts(model, x, args.n, args.sigma, batch_size=args.batch_size,
                                                       progress=False)),
        "bare forward": sync(lambda: bare_forward(model, noisy, total)),
    }, args.repeats)
    ratio = t["bare forward"] / t["sample_counts"]
    print(f"\n1. {args.inputs} inputs x {args.n:,} samples = {total:,} noisy inputs (median of {args.repeats})")
    print(f"   sample_counts  {t['sample_counts']:8.3f} s   {total / t['sample_counts']:12,.0f} samples/s")
    print(f"   bare forward   {t['bare forward']:8.3f} s   {total / t['bare forward']:12,.0f} samples/s")
    print(f"   throughput ratio sample_counts / bare forward = {ratio:.3f}  (goal >= 0.9)")

    net = dp.build(args.arch, args.dataset, norm="l2", seed=0).to(device).eval()
    repeated = x[:1].to(device).expand((args.batch_size,) + tuple(meta.shape)).contiguous()

    with torch.no_grad():
        h = net.features(x[:1].to(device))
        noisy_h = h + net.noise.sample((args.batch_size,) + tuple(h.shape[1:]), h)

    @torch.no_grad()
    def bare_rest():
        done = 0
        while done < total:
            m = min(noisy_h.shape[0], total - done)
            net.rest(noisy_h[:m]).double().softmax(1)
            done += m

    @torch.no_grad()
    def bare_noisy_net():
        done = 0
        while done < total:
            m = min(repeated.shape[0], total - done)
            net(repeated[:m]).double().softmax(1)
            done += m

    t = rounds({
        "expected_scores": sync(lambda: dp.expected_scores(net, x, n=args.n, scores="softmax",
                                                           batch_size=args.batch_size, progress=False)),
        "bare forward": sync(bare_noisy_net),
        "bare rest": sync(bare_rest),
    }, args.repeats)
    ratio = t["bare forward"] / t["expected_scores"]
    print(f"\n2. PixelDP ({args.arch}, noise after the first layer): {total:,} noisy representations "
          f"(median of {args.repeats})")
    print(f"   expected_scores {t['expected_scores']:8.3f} s   {total / t['expected_scores']:12,.0f} samples/s")
    print(f"   bare forward    {t['bare forward']:8.3f} s   {total / t['bare forward']:12,.0f} samples/s")
    print(f"   throughput ratio expected_scores / bare forward = {ratio:.3f}  (goal >= 0.9)")
    print(f"   (the layers after the noise alone, on noisy representations made beforehand: {t['bare rest']:.3f} s, "
          f"ratio {t['bare rest'] / t['expected_scores']:.3f}; the difference is mostly drawing the noise, "
          f"{int(h[0].numel())} values per sample here)")
    if args.skip_certify:
        return

    xc = x[:args.certify_inputs]
    b = xc.shape[0]
    print(f"\n3. CERTIFY (n0 = 100, alpha = 0.001) on {b} inputs: seconds per input (median of {args.repeats})")
    print(f"   {'n':>7s} {'batched':>10s} {'one at a time':>14s} {'reference-style':>16s} {'speed-up vs one':>16s} "
          f"{'vs reference':>13s}")
    for n in args.certify_n:
        kw = dict(sigma=args.sigma, n0=100, n=n, alpha=0.001, batch_size=args.batch_size)
        t = rounds({
            "batched": sync(lambda: G.certify(model, xc, progress=False, **kw)),
            "one": sync(lambda: [G.certify(model, xc[i:i + 1], seed=i, progress=False, **kw) for i in range(b)]),
            "reference": sync(lambda: reference_style_certify(model, xc, **kw)),
        }, args.repeats)
        print(f"   {n:7,d} {t['batched'] / b * 1e3:8.2f} ms {t['one'] / b * 1e3:11.2f} ms {t['reference'] / b * 1e3:13.2f} ms "
              f"{t['one'] / t['batched']:15.1f}x {t['reference'] / t['batched']:12.1f}x")


if __name__ == "__main__":
    main()
