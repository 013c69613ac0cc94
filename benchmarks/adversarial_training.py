"""Adversarial training on the quick profile (8x8 digits, small CNN): measured numbers.

Prints, for standard training and each training method of ``robustlab.training``, the
training time, the clean test accuracy and the Linf robust test accuracy at eps 0.2
under the attack ensemble ``rl.attacks.ensemble`` (APGD-CE, APGD-T, Square: the number
to report as robustness) with PGD-50 beside it (one random start, default step
2.5 * eps / 50: a single attack, which overstates robustness), and for the PGD-trained
model torchattacks' AutoAttack (standard) when torchattacks is installed. Then the
catastrophic-overfitting experiment: fast FGSM at larger radii / steps, with the PGD
accuracy of a fixed training batch after every epoch and what the guard did.
Finally the chapter-4 experiments of ``robustlab.features``.

    python benchmarks/adversarial_training.py [--threads 1] [--skip-features] [--skip-overfitting]

Goal (quick profile, 2-core CPU): PGD adversarial training reaches >= 94% clean and
>= 60% ensemble robust accuracy at eps 0.2 in under a minute of training.
"""

from __future__ import annotations

import argparse
import time

import torch

import robustlab as rl

EPS = 0.2


def robust_accuracies(model, test, eps=EPS, strong=True, autoattack=False):
    out = {}
    x_adv = rl.attacks.pgd(model, test.x, test.y, eps=eps, steps=50, restarts=1, seed=0)
    out["PGD-50"] = rl.train.evaluate(model, (x_adv, test.y))
    if strong:
        out["ensemble"] = rl.attacks.robust_accuracy(model, test, eps=eps, seed=0, progress=False)
    if autoattack:
        try:
            import torchattacks
        except ImportError:
            print("     (torchattacks is not installed: pip install --no-deps torchattacks for AutoAttack's number)")
        else:
            aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
            out["torchattacks AutoAttack"] = rl.train.evaluate(model, (aa(test.x, test.y), test.y))
    return out


def line(name, seconds, clean, robust):
    rob = "  ".join(f"{k} {v:6.1%}" for k, v in robust.items())
    print(f"  {name:34s} {seconds:6.1f} s   clean {clean:6.1%}   {rob}", flush=True)


def methods(train, test):
    print(f"Training methods (digits CNN, Linf eps {EPS}; robust accuracy on the {len(test.y)} test digits)")
    prof = rl.config.profile()
    model = rl.models.build("cnn", "digits", seed=0)
    start = time.perf_counter()
    rl.train.fit(model, train, epochs=prof.epochs, lr=prof.lr, batch_size=prof.batch_size, progress=False)
    line(f"standard ({prof.epochs} epochs)", time.perf_counter() - start, rl.train.evaluate(model, test),
         robust_accuracies(model, test))
    for method in ("pgd", "fgsm", "trades", "noise"):
        recipe = rl.training.TRAINING_RECIPES["quick"][method]
        start = time.perf_counter()
        model, hist = rl.training.robust_model("digits", method, cache=False, progress=False)
        seconds = time.perf_counter() - start
        desc = {"pgd": f"PGD-{recipe.get('steps')} AT", "fgsm": "fast FGSM (step 1.25 eps)",
                "trades": f"TRADES beta 6, {recipe.get('steps')} steps", "noise": "Gaussian noise sigma 0.25"}[method]
        line(f"{desc} ({recipe['epochs']} ep.)", seconds, rl.train.evaluate(model, test),
             robust_accuracies(model, test, autoattack=method == "pgd"))
        if hist.notes:
            print("     notes:", *hist.notes)
        if method == "noise":
            noisy = (test.x + 0.25 * torch.randn(test.x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
            print(f"  {'':34s} accuracy on x + N(0, 0.25^2): {rl.train.evaluate(model, (noisy, test.y)):.1%}")


def overfitting(train, test):
    print("\nCatastrophic overfitting (fast FGSM at larger radius / step; PGD-10 accuracy of 256 fixed training "
          "digits after each epoch; guards: Wong et al.'s drop check alone, and with the gap check, the default of "
          "adversarial_training(method='fgsm'))")
    batch = rl.data.subset(train, 256, seed=0)
    runs = [
        ("cnn", 0.2, None, 30),   # the recipe's radius, step 1.25 eps
        ("cnn", 0.3, 0.6, 30),    # step 2 eps
        ("cnn", 0.4, 0.5, 30),    # step 1.25 eps at a larger radius
        ("mlp", 0.3, 0.6, 30),
    ]
    for arch, eps, step, epochs in runs:
        model = rl.models.build(arch, "digits", seed=0)
        watch = rl.training.CatastrophicOverfittingGuard(batch.x, batch.y, eps=eps, drop=1.0)  # never acts: watches
        start = time.perf_counter()
        hist = rl.train.fit(model, train, epochs=epochs, lr=5e-3, loss_fn=rl.training.FastFGSMLoss(eps=eps, step_size=step),
                            callbacks=[watch], progress=False)
        seconds = time.perf_counter() - start
        fgsm_acc = hist.train_acc
        pgd_acc = watch.accuracies
        a = "1.25 eps" if step is None else f"{step / eps:g} eps"
        print(f"  {arch} eps {eps} step {a}, {epochs} epochs, {seconds:.1f} s: clean {rl.train.evaluate(model, test):.1%}, "
              f"test PGD-50 {robust_accuracies(model, test, eps, strong=False)['PGD-50']:.1%}")
        print("     FGSM accuracy while training: " + " ".join(f"{v:.2f}" for v in fgsm_acc[::3]) + "  (every 3rd epoch)")
        print("     PGD accuracy, fixed batch:    " + " ".join(f"{v:.2f}" for v in pgd_acc[::3]))
        best = max(range(len(pgd_acc)), key=pgd_acc.__getitem__)
        worst_after = min(pgd_acc[best:])
        print(f"     best PGD accuracy {pgd_acc[best]:.2f} (epoch {best + 1}); lowest afterwards {worst_after:.2f}")
        for kw in (dict(drop=0.2), dict(drop=0.2, max_gap=0.4)):
            model = rl.models.build(arch, "digits", seed=0)
            guard = rl.training.CatastrophicOverfittingGuard(batch.x, batch.y, eps=eps, **kw)
            hist = rl.train.fit(model, train, epochs=epochs, lr=5e-3,
                                loss_fn=rl.training.FastFGSMLoss(eps=eps, step_size=step), callbacks=[guard],
                                progress=False)
            what = ", ".join(f"{k}={v}" for k, v in kw.items())
            print(f"     guard {what}: " + (hist.notes[0] if hist.notes else f"no rollback ({hist.epochs} epochs)"))
    print("  reference, PGD-7 AT at eps 0.4 (quick recipe): ", end="")
    model, _ = rl.training.robust_model("digits", "pgd", eps=0.4, cache=False, progress=False)
    print(f"clean {rl.train.evaluate(model, test):.1%}, test PGD-50 at 0.4 "
          f"{robust_accuracies(model, test, 0.4, strong=False)['PGD-50']:.1%}")


def features(train, test):
    F = rl.features
    print("\nChapter 4: robustness, accuracy and features")
    start = time.perf_counter()
    curve = F.tsipras_tradeoff(progress=False)
    print(f"  Tsipras et al. toy model (d=100, p=0.9, eta=0.3), linear classifiers, {time.perf_counter() - start:.1f} s:")
    for row in curve.as_table():
        print(f"     eps_train {row['eps_train']:.2f}: clean {row['clean']:.4f}  robust(2 eta) {row['robust']:.4f}  "
              f"theorem's bound on clean {row['bound']:.4f}")
    standard, _ = rl.train.trained_model("digits", progress=False)
    robust, _ = rl.training.robust_model("digits", progress=False)
    a_std = F.saliency_alignment(standard, test.x, test.y)
    a_rob = F.saliency_alignment(robust, test.x, test.y)
    print(f"  saliency alignment (corr(|grad logit|, ink), test digits): standard {a_std.mean():.3f}, "
          f"robust {a_rob.mean():.3f}; robust higher on {(a_rob > a_std).float().mean():.0%} of the images")
    start = time.perf_counter()
    res = F.feature_datasets_experiment(standard, robust, train, test, eps=0.1, dataset="digits", progress=False)
    print(f"  Ilyas et al. data sets, standard CNN trained on each, original test set ({time.perf_counter() - start:.0f} s):")
    for row in res.as_table():
        print(f"     {row['dataset']:26s} clean {row['clean']:6.1%}   PGD-20 at Linf 0.1 {row['robust']:6.1%}")
    start = time.perf_counter()
    sc = F.sample_complexity(progress=False)
    print(f"  Schmidt et al. Gaussian mixture (d=400, Linf eps 0.5, 20 trials, {time.perf_counter() - start:.1f} s):")
    for row in sc.as_table():
        print(f"     n {row['n']:4d}: standard error {row['standard']:.4f}   robust error {row['robust']:.4f}   "
              f"robust error (thresholded) {row['robust_thresholded']:.4f}")
    for level in (0.1, 0.05):
        rob = [sc.samples_to_reach(level, w) for w in ("robust", "robust_thresholded")]
        rob = min((n for n in rob if n is not None), default=None)
        print(f"     samples to reach {level:.0%} error: standard {sc.samples_to_reach(level)}, robust {rob}")
    print(f"     infinite data: standard error {sc.bayes_standard:.2g}, robust error {sc.bayes_robust:.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 suits these tiny models)")
    ap.add_argument("--skip-overfitting", action="store_true")
    ap.add_argument("--skip-features", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rl.set_profile("quick")
    train, test = rl.data.load("digits")
    print(f"robustlab {rl.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"device {rl.models.best_device()}\n")
    methods(train, test)
    if not args.skip_overfitting:
        overfitting(train, test)
    if not args.skip_features:
        features(train, test)


if __name__ == "__main__":
    main()
