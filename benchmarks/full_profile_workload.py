"""Expected time of each chapter under the full profile (MNIST) on one GPU: an estimate from a workload count.

No GPU is measured here. For every chapter the script counts the work of its cells under the
full profile (read from the chapters and the package defaults, with the sizes taken from
``rl.config.PROFILES["full"]`` and the training recipes), in *forward-equivalents of the full
profile's CNN* (``rl.models.build("cnn", "mnist")``, width 32): a forward pass of one image is 1,
a forward and backward pass (training, or an attack's gradient) is 3 (the backward pass costs
about twice the forward's multiply-adds); a smaller model counts by its multiply-adds relative
to the CNN's. It then measures, on this machine's CPU, forward and forward+backward images per
second of that CNN at batch 1024 (one thread and two), and converts:

* CPU time = forward-equivalents / measured CPU rate (two threads);
* GPU time = forward-equivalents x FLOPs of one CNN forward / an ASSUMED effective GPU rate of
  ``GPU_FLOPS`` (2 TFLOP/s: a quarter of the 8.1 TFLOP/s FP32 peak of NVIDIA's T4 data sheet,
  a utilization a small convolutional network at batch 1024 plausibly reaches; on an A100 or
  H100 the time is several times shorter). It is an estimate, not a measurement; it leaves out
  data loading, Python overhead between small batches and cells whose work is NumPy or tiny
  linear models (listed as not counted).

Training is counted in the first chapter that trains a model (the zoo caches trained models,
so later chapters load them): "cold" is a first run with an empty model cache, "warm" one
where every model is cached. Attack ensembles are counted at their worst case (every input
still robust reaches every part: APGD-CE 100 steps, APGD-T 9 targets x 100 steps, Square 1000
queries); on a standard model, whose inputs fall to the first part, only APGD-CE is counted.

Chapter 5's certified training and certification are not multiply-add counts: an IBP step
propagates a box and the dual bound (Kolter and Wong's dual network,
``robustlab.certify.bounds.dual_margin_bounds``) propagates one column per hidden unit of
every input, so their cost is MEASURED here (:func:`bound_costs`): one plain
forward+backward step, one ``IBPLoss`` step, one ``DualLoss`` step and one dual bound
without gradient on the full profile's MLP (784-256-256-10) at batch ``BOUND_BATCH``, on one
CPU thread, each as a multiple of the plain step per input; the count scales the MLP's
forward+backward by that multiple (and assumes the GPU keeps the CPU's ratio).
:data:`MEASURED_BOUND_COSTS` records the multiples the table in ``book/intro.md`` was made
with (the script prints a fresh measurement next to them); the estimate uses the recorded
ones so that the table does not move with the load of the machine.

    python3 benchmarks/full_profile_workload.py [--reps 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import torch

import robustlab as rl
from robustlab.training import TRAINING_RECIPES
from robustlab.certify.bounds import DUAL_RECIPES, IBP_RECIPES, DualLoss, IBPLoss, dual_margin_bounds, relu_network

FULL = rl.config.PROFILES["full"]
GPU_FLOPS = 2.0e12  # ASSUMED effective FP32 rate of a T4-class GPU on the small CNN (see the docstring)
N_TRAIN, N_TEST = 60_000, 10_000  # MNIST
FB = 3.0  # forward+backward in forward-equivalents
BOUND_BATCH = 16  # batch of the bound measurements (a DualLoss step at batch 128 takes ~25 s on one CPU thread)
# Cost per input of a training step with each bound, and of the dual bound alone (no gradient), as a
# multiple of a plain forward+backward step of the same MLP: bound_costs(reps=3) on one CPU thread, batch 16,
# the mean of two runs (5.4 and 5.7, 410 and 453, 104 and 173; load average 4 to 6); rerun the script to
# compare with a fresh measurement.
MEASURED_BOUND_COSTS = {"ibp_step": 5.5, "dual_step": 430.0, "dual_bound": 140.0}


def forward_flops(model, shape) -> float:
    """Multiply-adds x 2 of one forward pass of ``model`` on one input of ``shape`` (conv and linear layers)."""
    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += 2.0 * k * output[0].numel()
        elif isinstance(module, torch.nn.Linear):
            total[0] += 2.0 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total[0]


def measure(model, shape, threads: int, reps: int, batch: int = 1024) -> tuple[float, float]:
    """Images per second (forward, forward+backward with input gradient) at ``batch`` on ``threads`` threads."""
    torch.set_num_threads(threads)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    model.eval()
    with torch.no_grad():
        model(x)
    best_f = best_fb = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        with torch.no_grad():
            model(x)
        best_f = min(best_f, time.perf_counter() - t)
        xg = x.clone().requires_grad_(True)
        t = time.perf_counter()
        torch.nn.functional.cross_entropy(model(xg), y).backward()
        best_fb = min(best_fb, time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
    return batch / best_f, batch / best_fb


@functools.lru_cache(maxsize=None)
def bound_costs(batch: int = BOUND_BATCH, reps: int = 2) -> dict:
    """Measured cost per input of an IBPLoss step, a DualLoss step and a dual bound without gradient on
    the full profile's MLP, each as a multiple of a plain forward+backward step (best of ``reps``, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = rl.models.build("mlp", "mnist", width=DUAL_RECIPES["full"]["width"])
        x, y = torch.rand(batch, *SHAPE), torch.randint(0, 10, (batch,))
        eps = 1.1 * rl.config.default_eps("certified", "mnist")

        def best(fn):
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
                model.zero_grad(set_to_none=True)
            return min(times)

        def step(loss_fn):
            return lambda: loss_fn(model, x, y)[0].backward()

        def dual_bound():
            with torch.no_grad():
                dual_margin_bounds(relu_network(model, SHAPE), x.flatten(1), y, eps)

        plain = best(lambda: torch.nn.functional.cross_entropy(model(x), y).backward())
        return {"ibp_step": best(step(IBPLoss(eps=eps, kappa=0.5))) / plain,
                "dual_step": best(step(DualLoss(eps=eps, kappa=0.5))) / plain,
                "dual_bound": best(dual_bound) / plain}
    finally:
        torch.set_num_threads(threads)


def certified_training_fe(recipe: dict, step_cost: float, rel_mlp: float) -> float:
    """Forward-equivalents of certified training by ``recipe``: the warm-up epochs are plain steps, the
    rest (ramp included) cost ``step_cost`` plain steps per input."""
    bound_epochs = recipe["epochs"] - recipe["warmup_epochs"]
    return N_TRAIN * FB * rel_mlp * (recipe["warmup_epochs"] + bound_epochs * step_cost)


def ensemble_fe(n: int, robust: bool) -> float:
    """Forward-equivalents of the default attack ensemble on ``n`` inputs (worst case for a robust model)."""
    if not robust:
        return n * 100 * FB
    return n * (100 * FB + 9 * 100 * FB + 1000)


def workload(rel: dict) -> dict:
    """Per chapter: list of (what, forward-equivalents, training?) under the full profile."""
    p, E, n = FULL, FULL.epochs, FULL.n_eval
    pgd, fgsm, trades, noise = (TRAINING_RECIPES["full"][k] for k in ("pgd", "fgsm", "trades", "noise"))
    ibp, dual = IBP_RECIPES["full"], DUAL_RECIPES["full"]
    cost = MEASURED_BOUND_COSTS
    nc, ns = p.n_certify, p.n_smoothing
    chapters = {
        "01": [("train standard CNN", E * N_TRAIN * FB, True),
               ("FGSM and smallest-eps FGSM (50 radii, worst case) on n_eval", n * 51 * FB, False),
               ("nearest training digit search (2000 references)", 0.0, False),
               ("ResNet-18 on two photographs, PGD-10", 2 * 11 * FB * rel["resnet18"], False)],
        "02": [("PGD 1+3+10+30 steps and FGSM", n * 45 * FB, False),
               ("PGD-10 curves, 2 norms x 5 radii", n * 10 * 10 * FB, False),
               ("PGD-20 CE and CW, PGD-10 with 1 and 5 restarts", n * (40 + 60) * FB, False),
               ("targeted PGD-20, 20 inputs x 10 x 9 pairs", 20 * 90 * 20 * FB, False),
               ("CW-L2 (100 inputs, 6 x 100 iterations) and smallest-eps PGD-20 (30 radii, worst case)",
                100 * (600 + 30 * 20) * FB, False),
               ("Square 1000 queries and PGD-20 on 200", 200 * (1000 + 20 * FB), False)],
        "03": [("train PGD-AT", pgd["epochs"] * N_TRAIN * (pgd["steps"] + 1) * FB, True),
               ("train fast FGSM (10 epochs)", 10 * N_TRAIN * 2 * FB, True),
               ("train TRADES beta 1 and 6 (3 steps, 10 epochs)", 2 * 10 * N_TRAIN * 5 * FB, True),
               ("train noise sigma 0.25", noise["epochs"] * N_TRAIN * FB, True),
               ("catastrophic-overfitting MLP, FGSM, 20 epochs", 20 * N_TRAIN * 2 * FB * rel["mlp"], True),
               ("ensemble on 5 robust models + standard", 5 * ensemble_fe(n, True) + ensemble_fe(n, False), False),
               ("PGD-50 CE and CW on 6 models", 6 * 2 * n * 50 * FB, False)],
        "04": [("ensemble on standard and PGD model (twice each)", 2 * (ensemble_fe(n, True) + ensemble_fe(n, False)),
                False),
               ("constructed data sets: 5000 x 100 steps, 3 sets", 3 * 5000 * 100 * FB, False),
               ("train on the original and constructed sets (4 models, 5000 x 8 epochs)", 4 * 5000 * 8 * FB, True),
               ("their PGD-20 evaluation", 4 * n * 20 * FB, False),
               ("train the random-shift model", E * N_TRAIN * FB, True),
               ("ensemble on shift and noise models", 2 * ensemble_fe(n, True), False)],
        "05": [(f"train the IBP MLP ({ibp['epochs']} epochs; an IBP step measured at {cost['ibp_step']:.1f} plain steps)",
                certified_training_fe(ibp, cost["ibp_step"], rel["mlp16"]), True),
               (f"train the dual MLP ({dual['epochs']} epochs; a DualLoss step measured at {cost['dual_step']:.0f} "
                f"plain steps)", certified_training_fe(dual, cost["dual_step"], rel["mlp16"]), True),
               ("train the standard MLP width 4", E * N_TRAIN * FB * rel["mlp4"], True),
               ("PGD-20, IBP and dual certified accuracy over 6 radii, 3 models (each counted at width 16)",
                3 * 6 * n * (20 + cost["ibp_step"] + cost["dual_bound"]) * FB * rel["mlp16"], False),
               ("dual bound with 20 slope-optimization steps, 2 models",
                2 * n * 20 * cost["dual_step"] * FB * rel["mlp16"], False)],
        "06": [("PixelDP expected scores and certify, n = 1000 on 150 inputs (3 runs)",
                3 * 150 * 1000 * rel["mlp"], False),
               ("PGD-20 through the noisy network on a few inputs", 2 * 20 * 20 * 1000 * FB * rel["mlp"], False),
               ("train the two PixelDP MLPs", 2 * E * N_TRAIN * FB * rel["mlp"], True)],
        "07": [("train noise sigma 0.12 and 0.5 (0.25 from chapter 3)", 2 * noise["epochs"] * N_TRAIN * FB, True),
               ("probe n = 50 on 4 models x 3 sigmas", 12 * nc * 50, False),
               ("CERTIFY on 4 models: n_certify x (n0 = 100 + n_smoothing)", 4 * nc * (100 + ns), False),
               ("PREDICT, PGD-20 and PREDICT at 1x and 3x the radius (sigma 0.5)",
                nc * ns + 2 * nc * (20 * FB + ns), False),
               ("half-space CERTIFY (20 points, 10 x n_smoothing; linear model)", 20 * 10 * ns * rel["linear"], False),
               ("widget snapshots (24 inputs, n up to n_smoothing, 3 settings)", 3 * 24 * ns, False)],
        "08": [("concentration and the shift demo (NumPy, tiny)", 0.0, False)],
        "09": [("robust mean estimators and the backdoor filter (NumPy)", 0.0, False)],
        "10": [("label flips: 5 MLPs width 2", 5 * E * N_TRAIN * FB * rel["mlp2"], True),
               ("backdoor CNNs width 8 (about 4 trainings)", 4 * E * N_TRAIN * FB * rel["cnn8"], True),
               ("DPA k = 10, 50 and SS-DPA (each the whole training set once per epoch)",
                3 * E * N_TRAIN * FB * rel["mlp2"], True),
               ("FA k = 10, 50 with d = 4", 2 * 4 * E * N_TRAIN * FB * rel["mlp2"], True),
               ("lethal-dose study, 4 k, 4 x epochs", 4 * 4 * E * N_TRAIN * FB * rel["mlp2"], True),
               ("certify ensembles on the test set (k up to 100 base models)",
                (10 + 50 + 50 + 4 * 10 + 4 * 50 + 10 + 25 + 50 + 100) * N_TEST * rel["mlp2"], False)],
        "11": [("influence on linear models of two digit classes (tiny)", 0.0, False)],
        "12": [("train the ablation CNN (k = 45, 5 x epochs), column and block base CNNs (2 x epochs each)",
                9 * E * N_TRAIN * FB, True),
               ("train the SAC segmenter and the masked classifier (counted at the CNN's cost)", 2 * E * N_TRAIN * FB,
                True),
               ("ablation CERTIFY at 3 k: n_certify x (100 + n_smoothing)", 3 * nc * (100 + ns), False),
               ("sparse_l0 on a 128-mask surrogate (40 inputs, up to 33 pixels) and 2 PREDICTs",
                40 * 33 * 128 * FB + 2 * 40 * ns, False),
               ("column and block certification: n_certify x (28 + 784) bands", nc * (28 + 784), False),
               ("patch attacks on the 28-band surrogate: 2 x 40 inputs x 4 tries x 20 steps",
                2 * 40 * 4 * 20 * 28 * FB, False),
               ("randomized column CERTIFY on 30 inputs", 30 * (100 + ns), False),
               ("SAC evaluation: 40 images, transfer and adaptive patches (two networks)", 40 * (30 + 4 * 31 * 2) * FB,
                False),
               ("widget snapshots", 24 * 28 + 2 * 30 * 28 * FB, False)],
        "13": [("train DSSN, SSN, fractional and two Wasserstein base CNNs", 5 * E * N_TRAIN * FB, True),
               ("DSSN certification of two models: 2 x n_certify x 441 offsets (q = 255)", 2 * nc * 441, False),
               ("SSN and two Wasserstein CERTIFY: 3 x n_certify x (100 + n_smoothing)", 3 * nc * (100 + ns), False),
               ("fractional certification: n_certify x 400 positions", nc * 400, False),
               ("L1 PGD-20 at two budgets on 100 inputs, on the base model and on the 441-offset surrogate",
                2 * 100 * 20 * FB * (1 + 441) + 4 * 100 * 441, False),
               ("widget: 24 inputs x 441 offsets", 24 * 441, False)],
        "14": [("CERTIFY for Cohen and SoS (shared samples), dipole and CDF smoothing: 3 x n_certify x "
                "(100 + n_smoothing) (noise-0.25 from chapter 3)", 3 * nc * (100 + ns), False),
               ("the 2-D band demo (an analytic classifier, NumPy)", 0.0, False)],
        # chapter 15: an SOC layer costs about as many convolutions as its Taylor terms (5 in
        # training, 12 in evaluation): the SOC network is counted at 5 and 12 times the CNN
        "15": [("train the SOC network, 20 epochs", 20 * N_TRAIN * FB * 5, True),
               ("SOC certificates and APGD-CE / PGD-20 inside them, SOC and IBP models, n_eval inputs",
                n * (12 + (100 + 20) * FB * 12) + n * (100 + 20) * FB * rel["mlp16"], False),
               ("train the softplus MLPs: cross-entropy, regularizer and CRT (30 epochs; CRT with a 10 x 5-step "
                "curvature attack; a curvature term counted as 3 passes; counted at the MLP's cost)",
                30 * N_TRAIN * FB * rel["mlp"] * (1 + 3 + (50 + 3)), True),
               ("CRC on 2 models: n_eval inputs x 9 other classes x 10 x 5 gradient steps (MLP)",
                2 * n * 9 * 50 * FB * rel["mlp"], False),
               ("low-curvature study: 6 activations x 20 epochs of PGD-10 training of the MLP (width 16) and "
                "the ensemble on n_eval", 6 * (20 * N_TRAIN * 11 * FB + ensemble_fe(n, True)) * rel["mlp16"], True),
               ("conv-norm timings and the widget (single kernels)", 0.0, False)],
        # chapter 16: an LPIPS step costs a forward and backward pass of the classifier and of the
        # LPIPS network (the profile's CNN), counted as 2 x FB; its tables use n_eval // 6 inputs
        "16": [("train the LPIPS network (the profile's CNN, seed 1)", E * N_TRAIN * FB, True),
               ("train PAT: 10 epochs, Fast-LPA with 10 steps", 10 * N_TRAIN * (2 * 10 + 1) * FB, True),
               ("train standard, PGD-5, OM-AT (5 latent steps) and DMAT (5 + 5 steps) on the OM-digits, "
                "10 epochs each", 10 * N_TRAIN * (1 + 6 + 6 + 11) * FB, True),
               ("LPA curves (2 models x 3 budgets, 5 x 20 steps) and noise of the same LPIPS",
                2 * 3 * (n // 6) * 100 * 2 * FB, False),
               ("threat table: 3 models x (PPGD-20, 2 x LPA, Linf and L2 ensembles, flow-20)",
                3 * ((n // 6) * (20 + 2 * 100) * 2 * FB + 2 * ensemble_fe(n // 6, True) + (n // 6) * 20 * FB), False),
               ("on-manifold table: 4 models x (Linf ensemble, 2 latent PGD-20, LPA, flow-20)",
                4 * (ensemble_fe(n // 6, True) + (n // 6) * (40 * FB + 100 * 2 * FB + 20 * FB)), False),
               ("widget snapshots (8 inputs x 4 budgets of LPA)", 8 * 4 * 100 * 2 * FB, False)],
        # chapter 17: the CartPole policy is linear (NumPy, not counted); the shift and interpretation
        # models are MLPs (counted at the MLP's cost); the bias and CARL models fine-tune the CNN
        "17": [("policy smoothing: CEM fits and 5,000 + 1,800 episodes per sigma (a linear policy, NumPy)", 0.0, False),
               ("train the shift model (MLP, 10 epochs under randomized brightness and translation)",
                10 * N_TRAIN * FB * rel["mlp"], True),
               ("certified accuracy under shift: 8 settings x 20,000 draws, and the grid check",
                (8 * 20_000 + 60 * 200 * 20) * rel["mlp"], False),
               ("sparsified SmoothGrad certificates: 24 inputs x 2 maps x 1,000 gradients, and PGD on the overlap",
                (24 * 2 * 1000 + 24 * 10 * 200) * FB * rel["mlp4"], False),
               ("robustness bias: DeepFool + PGD-20 bisection on 3 models, and smoothing (n = 600) on n_eval",
                3 * n * 180 * FB + n * 600, False),
               ("fine-tune the bias models (3 epochs, the regularizer's gradient counted as 4 passes) and CARL "
                "(2 epochs, 3-step PGD)", (2 * 3 * 4 + 2 * 2 * 6) * N_TRAIN * FB, True),
               ("abstention: the attack demo and the trade-off table (5 models, 20-step attacks) on n_eval / 2",
                (n // 2) * 240 * FB + 5 * (n // 2) * 80 * FB, False)],
    }
    return chapters


SHAPE = (1, 28, 28)


def relative_costs() -> tuple[float, dict]:
    """FLOPs of one forward pass of the full CNN, and the other models' forward cost relative to it."""
    flops = forward_flops(rl.models.build("cnn", "mnist", width=FULL.width), SHAPE)

    def ratio(model):
        return forward_flops(model, SHAPE) / flops

    rel = {"mlp": ratio(rl.models.build("mlp", "mnist")), "mlp16": ratio(rl.models.build("mlp", "mnist", width=16)),
           "mlp4": ratio(rl.models.build("mlp", "mnist", width=4)), "mlp2": ratio(rl.models.build("mlp", "mnist", width=2)),
           "cnn8": ratio(rl.models.build("cnn", "mnist", width=8)), "linear": 2.0 * 784 * 2 / flops,
           "resnet18": 2 * 1.82e9 / flops}  # ResNet-18 at 224x224: 1.82 G multiply-adds (He et al. 2016, table 1)
    return flops, rel


def gpu_minutes() -> dict:
    """Per chapter, the estimated GPU minutes (cold cache, warm cache) under the assumed rate ``GPU_FLOPS``."""
    flops, rel = relative_costs()
    gpu_fe = GPU_FLOPS / flops
    return {ch: (sum(fe for _, fe, _ in items) / gpu_fe / 60, sum(fe for _, fe, t in items if not t) / gpu_fe / 60)
            for ch, items in workload(rel).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    shape = SHAPE
    cnn = rl.models.build("cnn", "mnist", width=FULL.width)
    flops, rel = relative_costs()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rates = {t: measure(cnn, shape, t, args.reps) for t in (1, 2)}
    fe_per_s = max(f for f, _ in rates.values())  # forward-equivalents per second on the CPU, the faster setting
    print(f"full profile: {FULL}")
    print(f"CNN width {FULL.width}: {flops / 1e6:.2f} MFLOP per forward pass; CPU load average {load:.1f} at measurement")
    for t, (f, fb) in rates.items():
        print(f"CPU, {t} thread(s), batch 1024: forward {f:,.0f} img/s ({1e6 / f:.1f} us each), "
              f"forward+backward {fb:,.0f} img/s (ratio {f / fb:.2f}; counted as {FB:g})")
    gpu_fe = GPU_FLOPS / flops
    print(f"ASSUMED GPU: {GPU_FLOPS / 1e12:g} TFLOP/s effective (T4-class) = {gpu_fe:,.0f} CNN forwards/s, "
          f"{gpu_fe / fe_per_s:.0f} x the faster measured CPU rate")
    fresh = bound_costs()
    print(f"bound costs per input on the full MLP, batch {BOUND_BATCH}, one CPU thread, in plain forward+backward "
          f"steps: " + ", ".join(f"{k} {fresh[k]:.1f} (recorded {MEASURED_BOUND_COSTS[k]:.1f})" for k in fresh))
    print()
    print(f"{'chapter':8s}{'cold Mfe':>10s}{'warm Mfe':>10s}{'CPU h cold':>12s}{'GPU min cold':>14s}{'GPU min warm':>14s}")
    for ch, items in workload(rel).items():
        cold = sum(fe for _, fe, _ in items)
        warm = sum(fe for _, fe, train in items if not train)
        print(f"{ch:8s}{cold / 1e6:10.1f}{warm / 1e6:10.1f}{cold / fe_per_s / 3600:12.2f}"
              f"{cold / gpu_fe / 60:14.1f}{warm / gpu_fe / 60:14.1f}")
        for what, fe, train in items:
            label = "not counted" if fe == 0 else f"{fe / 1e6:.2f} Mfe"
            print(f"{'':10s}{'[train] ' if train else ''}{what}: {label}")
    print("\nMfe: 1e6 forward-equivalents of the full CNN. CPU hours use the rate measured above (a loaded machine\n"
          "measures low); GPU minutes are an ESTIMATE under the assumed GPU rate, not a measurement.")


if __name__ == "__main__":
    main()
