"""The attack ensemble ``rl.attacks.ensemble`` against torchattacks' AutoAttack: robust accuracy and time.

On the quick profile's PGD-trained digits CNN (``rl.training.robust_model("digits", "pgd")``,
cached) at Linf eps 0.2, the script runs, alternately (the order rotates every round)

* ``rl.attacks.ensemble`` with its default parts (APGD-CE 100 iterations, APGD-T against
  the 9 top classes with 100 iterations each, Square 1,000 queries), each part on the inputs
  still robust,
* ``torchattacks.AutoAttack(version="standard")``: APGD-CE, APGD-T, FAB-T and Square
  (5,000 queries), also each on the inputs still robust (skipped with a message if
  torchattacks is not installed; ``pip install --no-deps torchattacks``),

and prints, side by side, the robust accuracy of each, the ensemble's accuracy after each
part, the median times and their ratio. Beside them, for reference: PGD-50 with one
random start and APGD-CE alone.

Goals: the ensemble's robust accuracy at most 0.5 points above AutoAttack's, and
ensemble / AutoAttack time <= 1.0.

    python benchmarks/autoattack.py [--n 360] [--eps 0.2] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import robustlab as rl


def robust(model, x, y, x_adv) -> float:
    return float(((rl.train.predict(model, x) == y) & (rl.train.predict(model, x_adv.cpu()) == y)).float().mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=360, help="test digits evaluated (the first n)")
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds of each (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 suits these tiny models)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rl.set_profile("quick")
    model, _ = rl.training.robust_model("digits", "pgd", progress=False)
    _, test = rl.data.load("digits")
    x, y = test.x[:args.n], test.y[:args.n]
    eps = args.eps
    print(f"robustlab {rl.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"PGD-trained digits CNN, {len(y)} test digits, Linf eps {eps}")

    results = {}
    runners = {"rl.attacks.ensemble": lambda: rl.attacks.ensemble(model, x, y, eps=eps, seed=0, progress=False,
                                                                  return_result=True)}
    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed (pip install --no-deps torchattacks): the ensemble alone")
    else:
        def autoattack():
            aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
            return aa(x, y)
        runners["torchattacks AutoAttack"] = autoattack

    names = list(runners)
    times = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            results[name] = runners[name]()
            times[name].append(time.perf_counter() - start)

    clean = rl.train.evaluate(model, (x, y))
    pgd50 = robust(model, x, y, rl.attacks.pgd(model, x, y, eps=eps, steps=50, seed=0))
    apgd_ce = robust(model, x, y, rl.attacks.apgd(model, x, y, eps=eps, seed=0))
    ens = results["rl.attacks.ensemble"]
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"  clean accuracy                 {clean:6.1%}")
    print(f"  PGD-50, one start              {pgd50:6.1%}   (reference: a single attack)")
    print(f"  APGD-CE alone                  {apgd_ce:6.1%}")
    for part, acc in zip(ens.names, ens.stages):
        print(f"  ensemble after {part:15s} {acc:6.1%}")
    print(f"  rl.attacks.ensemble            {ens.robust_accuracy:6.1%}   median {med['rl.attacks.ensemble']:7.1f} s")
    ratio = None
    if "torchattacks AutoAttack" in results:
        aa_acc = robust(model, x, y, results["torchattacks AutoAttack"])
        print(f"  torchattacks AutoAttack        {aa_acc:6.1%}   median {med['torchattacks AutoAttack']:7.1f} s")
        ratio = med["rl.attacks.ensemble"] / med["torchattacks AutoAttack"]
        gap = 100 * (ens.robust_accuracy - aa_acc)
        print(f"ensemble - AutoAttack robust accuracy = {gap:+.1f} points  (goal <= +0.5)")
        print(f"time ratio ensemble / AutoAttack = {ratio:.2f}  (goal <= 1.0)")
    return {"ensemble": ens.robust_accuracy, "ratio": ratio}


if __name__ == "__main__":
    main()
