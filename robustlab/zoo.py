"""The model zoo: every trained model a chapter or lab uses, as a named recipe of the active profile.

A recipe is a name, the chapters and labs that use it, and a builder that calls the same
public function with the same arguments as those notebooks (``rl.train.trained_model()``,
``rl.training.robust_model(method="noise", sigma=0.25)``, ...), so the artefact it
trains is the one the notebook loads from the cache (:mod:`robustlab.cache`: the key is
the full configuration, and the profile, data and settings come from the active
profile when the builder runs). ``python -m robustlab warmup`` builds every recipe
(``--chapter N`` or ``--lab N`` one notebook's, ``--list`` to see them), so a lecture on
any chapter starts warm.

Every profile-driven trained model is made by one factory, :func:`profile_model`: the
profile's data set, a fresh seeded :func:`robustlab.models.build` (or another builder)
on the best device, one training function, the model handed back in eval mode.

Examples
--------
>>> "standard" in names(chapter=1)
True
>>> [r.name for r in recipes(lab=4)]
['dpa-k10-lab4', 'dpa-k50-lab4']
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from . import config
from . import data as _data
from . import models as _models
from ._validate import check_positive_int

__all__ = ["Recipe", "RECIPES", "WarmResult", "profile_model", "loss_trained_model", "planar_demo", "names", "recipes",
           "recipe", "build", "warm"]


def profile_model(train_fn: Callable, dataset: str | None = None, arch: str | None = None, *, width: int | None = None,
                  seed: int = 0, device=None, build: Callable | None = None):
    """The one factory of the profile's trained models: data, a seeded fresh model, training.

    Loads ``dataset`` (default: the profile's) with :func:`robustlab.data.load`, builds
    ``build(arch, dataset, width=width, seed=seed)`` (default :func:`robustlab.models.build`),
    moves it to ``device`` (default :func:`robustlab.models.best_device`), calls
    ``history = train_fn(model, train, test)`` and returns
    :class:`robustlab.train.Trained` with the model in eval mode.
    """
    from .train import Trained

    if not callable(train_fn):
        raise TypeError(f"train_fn must be callable as train_fn(model, train, test), got {type(train_fn).__name__}")
    dataset = config.profile().dataset if dataset is None else dataset
    train, test = _data.load(dataset)
    model = (_models.build if build is None else build)(arch, dataset, width=width, seed=seed)
    model.to(_models.best_device() if device is None else device)
    history = train_fn(model, train, test)
    model.eval()
    return Trained(model, history)


def loss_trained_model(loss_fn, *, desc: str, dataset: str | None = None, arch: str | None = None,
                       width: int | None = None, epochs: int | None = None, lr: float | None = None, seed: int = 0,
                       device=None, progress: bool | None = None, cache: bool = True, evaluate: bool = False,
                       check_train: Callable | None = None, build: Callable | None = None):
    """A profile model trained by :func:`robustlab.train.fit` with ``loss_fn`` at the profile's settings.

    :func:`profile_model` with the training every base classifier of a certifier uses: the
    profile's batch size, its learning rate and epochs unless ``lr`` / ``epochs`` are given,
    the test split as ``eval_data`` when ``evaluate``, cached when ``cache``. ``check_train``
    is called on the training split first (e.g. to refuse pixels off a quantization grid).
    """
    from .train import fit

    prof = config.profile()

    def train_fn(model, train, test):
        if check_train is not None:
            check_train(train)
        return fit(model, train, epochs=prof.epochs if epochs is None else epochs, lr=prof.lr if lr is None else lr,
                   batch_size=prof.batch_size, seed=seed, loss_fn=loss_fn, eval_data=test if evaluate else None,
                   progress=progress, cache=cache, desc=desc)

    return profile_model(train_fn, dataset, arch, width=width, seed=seed, device=device, build=build)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named trained model: who uses it, what it is, and the call that builds it.

    ``make()`` trains it, or loads it from the cache when this exact configuration was
    trained before, and returns what the notebooks get (a ``Trained`` pair, an
    ensemble, ...). ``chapters`` holds chapter numbers, ``"labN"`` ids and the
    benchmarks (their paths) that ask for the same model under the quick profile.
    """

    name: str
    chapters: tuple
    what: str
    make: Callable = dataclasses.field(repr=False)

    def uses(self, chapter=None, lab=None) -> bool:
        return (chapter is None or int(chapter) in self.chapters) and (lab is None or f"lab{int(lab)}" in self.chapters)


def _trained(**kw):
    def make():
        from .train import trained_model
        return trained_model(**kw)
    return make


def _robust(**kw):
    def make():
        from .training import robust_model
        return robust_model(**kw)
    return make


def _lab2_pgd(eps_of_profile: Callable):
    def make():
        from .training import robust_model
        return robust_model(method="pgd", eps=eps_of_profile(), **lab2_recipe())
    return make


def lab2_recipe() -> dict:
    """The short PGD recipe of Lab 2's ``robust_model_at(eps)`` under the active profile."""
    return {"quick": dict(width=8, epochs=8, steps=3, eps_ramp_epochs=1, batch_size=128, lr=1e-2),
            "full": dict(epochs=5)}[config.profile().name]


def lab2_train_eps() -> tuple:
    """Lab 2's training radii (part 5; the last is the lab's ``EPS_TRAIN``)."""
    return {"quick": (0.0, 0.1, 0.2), "full": (0.0, 0.1, 0.3)}[config.profile().name]


def _ibp(**kw):
    def make():
        from .certify.bounds import ibp_trained_model
        return ibp_trained_model(**kw)
    return make


def _dual(**kw):
    def make():
        from .certify.bounds import dual_trained_model
        return dual_trained_model(**kw)
    return make


def _pixeldp(**kw):
    def make():
        from .smoothing.dp import pixeldp_model
        return pixeldp_model(**kw)
    return make


def _dpa(k: int, **kw):
    def make():
        from .poisoning import train_dpa
        train, _ = _data.load()
        return train_dpa(train, k, progress=False, cache=True, **kw)
    return make


def _fa(k: int, d: int):
    def make():
        from .poisoning import train_fa
        train, _ = _data.load()
        return train_fa(train, k, d, epochs=config.profile().epochs, progress=False, cache=True)
    return make


def _lethal_dose():
    def make():
        from .poisoning import lethal_dose_study
        train, test = _data.load()
        return lethal_dose_study(train, test, ks=(10, 25, 50, 100), radii=(5, 10, 20),
                                 epochs=4 * config.profile().epochs, progress=False)
    return make


def _ch10_dpa(k: int):
    def make():
        from .poisoning import train_dpa
        meta = _data.info()
        train, _ = _data.load(meta.name)
        return train_dpa(train, k, arch="mlp", dataset=meta.name, width=2, epochs=config.profile().epochs, seed=0,
                         progress=False, cache=True)
    return make


def _training(fn_name: str, **kw):
    def make():
        from . import training
        return getattr(training, fn_name)(**kw)
    return make


def _call(module: str, fn_name: str = "base_model", **kw):
    """A builder that calls ``robustlab.<module>.<fn_name>(**kw)`` (imported when it runs)."""
    def make():
        import importlib
        return getattr(importlib.import_module(f"robustlab.{module}"), fn_name)(**kw)
    return make


def planar_demo():
    """The chapter 3 network-in-the-plane setting: its data and the trained pair (cached)."""
    from .training import fit_planar
    data = _data.linearly_separable(40, margin=0.1, seed=5)
    epochs = 1 if config.profile().smoke else 500
    return data, fit_planar(data, 0.08, width=64, epochs=epochs, steps=7, cache=True)


def _recipes() -> dict:
    rows = [
        Recipe("standard", (1, 2, 3, 4, 7, 8, 12, 16, 17, "lab0", "lab1", "benchmarks/adversarial_training.py"),
               "the profile's standard model, rl.train.trained_model()", _trained()),
        Recipe("standard-mlp4", (5, 17), "an MLP of width 4, rl.train.trained_model(arch='mlp', width=4)",
               _trained(arch="mlp", width=4)),
        Recipe("pgd", (3, 4, 16, 17, "benchmarks/adversarial_training.py"),
               "PGD adversarial training at the profile's eps, rl.training.robust_model()", _robust(method="pgd")),
        Recipe("fgsm-fast", (3,), "fast FGSM training, 10 epochs, eps ramp over 2",
               _robust(method="fgsm", epochs=10, eps_ramp_epochs=2)),
        Recipe("trades-beta1", (3,), "TRADES, beta 1, 3 steps, 10 epochs",
               _robust(method="trades", beta=1.0, steps=3, epochs=10, eps_ramp_epochs=2)),
        Recipe("trades-beta6", (3,), "TRADES, beta 6, 3 steps, 10 epochs",
               _robust(method="trades", beta=6.0, steps=3, epochs=10, eps_ramp_epochs=2)),
        Recipe("planar-mlp", (3,), "a standard and a PGD-trained MLP on 2-D points, eps 0.08 (planar_demo())",
               planar_demo),
        Recipe("pgd-monitored", (3,), "PGD training monitored every epoch, rl.training.robust_generalization()",
               _training("robust_generalization")),
        Recipe("training-size", (3,), "standard and PGD training on 50-400 examples, "
               "rl.training.accuracy_against_training_size()", _training("accuracy_against_training_size")),
        Recipe("noise-0.12", (7,), "Gaussian noise training, sigma 0.12", _robust(method="noise", sigma=0.12)),
        Recipe("noise-0.25", (3, 4, 7, 14, "benchmarks/smoothing_certified_accuracy.py"),
               "Gaussian noise training, sigma 0.25", _robust(method="noise", sigma=0.25)),
        Recipe("noise-0.5", (7, "benchmarks/smoothing_certified_accuracy.py"),
               "Gaussian noise training, sigma 0.5", _robust(method="noise", sigma=0.5)),
        Recipe("noise-0.25-mlp", ("lab3",), "Gaussian noise training of the MLP, sigma 0.25",
               _robust(method="noise", sigma=0.25, arch="mlp")),
        Recipe("ibp", (5, 15, "lab3"), "IBP certified training at the default eps (0.1), ibp_trained_model()",
               _ibp()),
        Recipe("dual", (5,), "certified training with the dual bound (Kolter and Wong) at the default eps (0.1), "
               "dual_trained_model()", _dual()),
        Recipe("pixeldp-l2", (6,), "PixelDP MLP, L2, eps 1, delta 1e-5",
               _pixeldp(arch="mlp", norm="l2", eps=1.0, delta=1e-5)),
        Recipe("pixeldp-l2-input", (6,), "PixelDP MLP, L2, eps 1, delta 1e-5, the noise on the input",
               _pixeldp(arch="mlp", norm="l2", eps=1.0, delta=1e-5, noise_at="input")),
        Recipe("dpa-k10", (10,), "DPA, k = 10, the poisoning explorer's base models",  _ch10_dpa(10)),
        Recipe("dpa-k50", (10,), "DPA, k = 50, the poisoning explorer's base models", _ch10_dpa(50)),
        Recipe("fa-k10-d4", (10,), "Finite Aggregation, k = 10, d = 4", _fa(10, 4)),
        Recipe("lethal-dose", (10,), "the DPA ensembles of the Lethal Dose study, k = 10, 25, 50, 100",
               _lethal_dose()),
        Recipe("dpa-k10-lab4", ("lab4",), "DPA, k = 10, 10 epochs", _dpa(10, epochs=10, width=2, seed=0)),
        Recipe("dpa-k50-lab4", ("lab4",), "DPA, k = 50, 10 epochs", _dpa(50, epochs=10, width=2, seed=0)),
        # Part IV
        Recipe("ablation", (12,), "randomized ablation base classifier, k = default_k() pixels kept (10 of the digits' "
               "64, 45 of MNIST's 784), 5x the profile's epochs, rl.smoothing.ablation.base_model()",
               _call("smoothing.ablation")),
        Recipe("patch-column", (12, "lab6"), "column smoothing base classifier (band s = 2 on digits), "
               "rl.smoothing.patch.base_model('column')", _call("smoothing.patch", kind="column")),
        Recipe("patch-block", (12,), "block smoothing base classifier (block s = 4 on digits), "
               "rl.smoothing.patch.base_model('block')", _call("smoothing.patch", kind="block")),
        Recipe("sac-segmenter", (12, "lab6"), "Segment and Complete patch segmenter, side 3 (digits) / 5 (MNIST), "
               "rl.patch_detection.segmenter_model()", _call("patch_detection", "segmenter_model")),
        Recipe("sac-classifier", (12, "lab6"), "classifier on randomly masked images for Segment and Complete, "
               "rl.patch_detection.classifier_model()", _call("patch_detection", "classifier_model")),
        Recipe("dssn-0.5", (13, "lab6"), "DSSN base classifier, sigma 0.5 (lambda 0.866), q = default_q() (16 on the digits), "
               "rl.smoothing.l1.base_model()", _call("smoothing.l1")),
        Recipe("ssn-0.5", (13,), "SSN base classifier, sigma 0.5, rl.smoothing.l1.base_model('ssn')",
               _call("smoothing.l1", kind="ssn")),
        Recipe("fractional-p0.5-s2", (13,), "fractional Lp base classifier, p 1/2, budget 200, padded to s = 2 "
               "(400 positions on the digits), rl.smoothing.fractional.base_model(s=2.0)",
               _call("smoothing.fractional", s=2.0)),
        Recipe("wasserstein-0.02-per-image", (13,), "Wasserstein smoothing base classifier, flow sigma 0.02, one flow "
               "per image", _call("smoothing.wasserstein", sigma=0.02, shared=False)),
        Recipe("wasserstein-pixel-0.028", (13,), "Laplace noise on the unit-mass pixels, sigma 0.02 sqrt(2) (the same "
               "Wasserstein radius per pA)", _call("smoothing.wasserstein", sigma=0.02 * 2 ** 0.5, noise="pixel",
                                                   shared=False)),
        # chapter 14: second-order and dipole smoothing, CDF smoothing
        # chapter 15: Lipschitz networks (CONV-SV, SOC)
        Recipe("soc", (15, "lab7"), "a 1-Lipschitz LipConvNet of skew orthogonal convolutions and MaxMin, cross-entropy, "
               "rl.lipschitz.soc.soc_model()", _call("lipschitz.soc", "soc_model")),
        # chapter 15: curvature (CRC, CRT, low-curvature activations)
        Recipe("softplus-mlp", (15, "lab7"), "a softplus MLP (one hidden layer), cross-entropy only, "
               "rl.lipschitz.curvature.crt_model('standard')", _call("lipschitz.curvature", "crt_model", kind="standard")),
        Recipe("curvature-reg", (15,), "the softplus MLP with the curvature regularizer gamma K (no attack), "
               "rl.lipschitz.curvature.crt_model('curvature')", _call("lipschitz.curvature", "crt_model", kind="curvature")),
        Recipe("crt", (15,), "curvature-regularized training (CRT): curvature attack at L2 0.5 (digits) and gamma K, "
               "rl.lipschitz.curvature.crt_model('crt')", _call("lipschitz.curvature", "crt_model", kind="crt")),
        Recipe("low-curvature", (15,), "PGD training with ReLU, softplus and SiLU of several sharpnesses, monitored, "
               "rl.lipschitz.curvature.low_curvature_study()", _call("lipschitz.curvature", "low_curvature_study")),
        # chapter 16: perceptual threats (LPIPS, PPGD, LPA, PAT)
        Recipe("lpips-net", (16,), "the fixed LPIPS feature net: the profile's CNN trained once with seed 1, "
               "rl.perceptual.lpips_net()", _call("perceptual.lpips", "lpips_net")),
        Recipe("pat-net", (16,), "PAT with the fixed LPIPS net at the default budget (0.5 on the digits), "
               "rl.perceptual.pat_model()", _call("perceptual.training", "pat_model")),
        # chapter 16: dual-manifold adversarial training
        Recipe("pca-generator", (16,), "the PCA generator in logit space (16 latents on the digits), "
               "rl.perceptual.pca_generator()", _call("perceptual.manifold", "pca_generator")),
        *[Recipe(name, (16,), f"{what}, trained on the on-manifold digits, rl.perceptual.manifold_model({m!r})",
                 _call("perceptual.manifold", "manifold_model", method=m))
          for name, m, what in (("manifold-standard", "standard", "standard training"),
                                ("manifold-pgd", "pgd", "PGD training, Linf 0.2"),
                                ("omat", "omat", "on-manifold adversarial training (OM-AT), latent Linf 0.5"),
                                ("dmat", "dmat", "dual-manifold adversarial training (DMAT), Linf 0.2 and latent 0.5"))],
        # chapter 17: policy smoothing
        *[Recipe(f"policy-cem-{s:g}", (17,), f"linear CartPole policy fitted by the cross-entropy method under N(0, {s:g}^2) "
                 f"observation noise, rl.smoothing.policy.fit_policy({s:g})", _call("smoothing.policy", "fit_policy", sigma=s))
          for s in (0.0, 0.2)],
        # chapter 17: distribution shift and interpretation
        Recipe("shift-base", (17,), "an MLP (width 8) trained under Gaussian brightness (0.5) and translation (0.5 px) "
               "randomization, rl.shift.base_model()", _call("shift", "base_model")),
        # chapter 17: robustness bias and abstaining classifiers
        *[Recipe(f"bias-finetune-{a:g}", (17,), f"the standard model fine-tuned 3 epochs with the robustness-bias "
                 f"regularizer, alpha {a:g} (0: the control), tau DEFAULT_TAU, "
                 f"rl.fairness.bias_regularized_model(alpha={a:g}, init='standard')",
                 _call("fairness", "bias_regularized_model", alpha=a, init="standard"))
          for a in (0.0, 1.0)],
        *[Recipe(f"carl-finetune-{lam:g}", (17,), f"the PGD model given an abstain output and fine-tuned 2 epochs with "
                 f"CARL, lambda {lam:g}, Linf eps default_eps(), 3-step PGD, "
                 f"rl.abstain.carl_model(lam={lam:g}, init='pgd', steps=3)",
                 _call("abstain", "carl_model", lam=lam, init="pgd", steps=3))
          for lam in (1.0, 3.0)],
        # Lab 7: chapter 15's "soc" and "softplus-mlp" (tagged above)
    ]
    for i in range(3):
        rows.append(Recipe(f"lab2-pgd-{i}", ("lab2",), f"Lab 2's short PGD recipe at its training radius no. {i + 1}",
                           _lab2_pgd(lambda i=i: lab2_train_eps()[i])))
    return {r.name: r for r in rows}


RECIPES = _recipes()


def _chapter_arg(value, name):
    if value is None:
        return None
    return check_positive_int(int(value) if isinstance(value, str) and value.isdigit() else value, name,
                              allow_zero=name == "lab")


def recipes(chapter=None, lab=None) -> list:
    """The recipes, all of them or those of one chapter (a number) or one lab (a number)."""
    chapter, lab = _chapter_arg(chapter, "chapter"), _chapter_arg(lab, "lab")
    if chapter is not None and lab is not None:
        raise ValueError("give chapter or lab, not both")
    return [r for r in RECIPES.values() if r.uses(chapter, lab)]


def names(chapter=None, lab=None) -> list:
    """The names of :func:`recipes`."""
    return [r.name for r in recipes(chapter, lab)]


def recipe(name: str) -> Recipe:
    """The recipe called ``name``."""
    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


def build(name: str):
    """Train (or load from the cache) the recipe called ``name`` and return what its notebooks get."""
    return recipe(name).make()


@dataclasses.dataclass(frozen=True)
class WarmResult:
    """One recipe warmed: ``trained`` is False when everything came from the cache."""

    name: str
    seconds: float
    trained: bool
    files: int

    def line(self) -> str:
        how = f"trained ({self.files} new cache file{'s' if self.files != 1 else ''})" if self.trained \
            else "loaded from the cache"
        return f"{self.name:16s} {how:36s} {self.seconds:8.1f} s"


def _cache_files() -> set:
    root = Path(config.cache_dir())
    return {p for kind in ("models", "ensembles", "curves") for p in (root / kind).glob("*.pt")}


def warm(chapter=None, lab=None, *, only=None, out=print) -> list:
    """Build every recipe (or one chapter's, one lab's, or the names in ``only``), printing a line each.

    Each line names the recipe, whether it was trained (new cache files appeared) or
    loaded from the cache, and the seconds it took. Returns the :class:`WarmResult` list.
    """
    todo = recipes(chapter, lab) if only is None else [recipe(n) for n in only]
    results = []
    for r in todo:
        before = _cache_files()
        start = time.perf_counter()
        r.make()
        seconds = time.perf_counter() - start
        new = len(_cache_files() - before)
        results.append(WarmResult(r.name, seconds, new > 0, new))
        if out is not None:
            out(results[-1].line())
    return results
