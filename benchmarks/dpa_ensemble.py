"""Cost of a DPA ensemble: k base models trained as one vectorized ensemble.

Three ways to spend the same number of epochs on the same training set, timed side by
side in one run (alternating, the median of ``--repeats`` rounds after a warm-up round):

* **one model** of the base architecture on the whole training set (``rl.train.fit``);
* **the ensemble**: ``rl.poisoning.train_dpa`` with ``k`` partitions, all base models in
  one ``vmap``-ed forward/backward pass per step;
* **a Python loop** of ``k`` separate ``rl.train.fit`` runs, one per partition.

Every run uses the same per-model batch size, so each base model takes as many optimizer
steps on its partition as the single model would on it. The script prints the ratios
ensemble / one model (goal: at most 2) and loop / ensemble.

    python benchmarks/dpa_ensemble.py [--dataset digits] [--k 50] [--arch mlp] [--epochs 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import robustlab as rl
from robustlab import poisoning


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--width", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-loop", action="store_true", help="skip the loop of k separate trainings")
    args = ap.parse_args(argv)

    train, test = rl.data.load(args.dataset)
    device = rl.models.best_device()
    kw = dict(epochs=args.epochs, lr=2e-3, batch_size=args.batch_size, progress=False)
    part = poisoning.hash_partition(train.x, args.k)
    parts = [(train.x[part == j], train.y[part == j]) for j in range(args.k)]

    def one_model():
        model = rl.models.build(args.arch, args.dataset, width=args.width, seed=0).to(device)
        rl.train.fit(model, train, seed=0, **kw)

    def ensemble():
        poisoning.train_dpa(train, args.k, arch=args.arch, dataset=args.dataset, width=args.width, device=device,
                            seed=0, **kw)

    def loop():
        for j, data in enumerate(parts):
            model = rl.models.build(args.arch, args.dataset, width=args.width, seed=j).to(device)
            rl.train.fit(model, data, seed=j, **kw)

    runs = {"one model": one_model, "ensemble": ensemble}
    if not args.no_loop:
        runs["loop of k"] = loop
    times = {name: [] for name in runs}
    for r in range(args.repeats + 1):  # round 0 warms up and is not counted
        names = list(runs) if r % 2 else list(reversed(runs))
        for name in names:
            _sync(device)
            start = time.perf_counter()
            runs[name]()
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - start)

    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.dataset}, {train.x.shape[0]} training samples, k = {args.k}, arch {args.arch} (width {args.width}), "
          f"{args.epochs} epochs, per-model batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads")
    for name, t in med.items():
        print(f"  {name:10s} {t:8.3f} s  (median of {len(times[name])})")
    print(f"ensemble / one model: {med['ensemble'] / med['one model']:.2f}x  (goal <= 2)")
    if "loop of k" in med:
        print(f"loop of k / ensemble: {med['loop of k'] / med['ensemble']:.2f}x")
    ens = poisoning.train_dpa(train, args.k, arch=args.arch, dataset=args.dataset, width=args.width, device=device,
                              seed=0, **kw)
    cert = ens.certify(test.x)
    sizes = (0, 1, 2, 5, 10)
    acc = cert.certified_accuracy(test.y, at=sizes)
    print("certified accuracy at poison sizes " + ", ".join(f"{r}: {a:.3f}" for r, a in zip(sizes, acc)))


if __name__ == "__main__":
    main()
