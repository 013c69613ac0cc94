"""The poisoning explorer of chapter 10: a backdoor against its poison rate, DPA certificates against k."""

from __future__ import annotations

import torch

from .. import data as _data
from .. import models as _models
from .. import poisoning as _P
from .. import train as _train
from .._validate import check_class_index, check_interval, check_positive_int, check_seed
from ._live import live

__all__ = ["PoisoningExplorer"]


class PoisoningExplorer:
    r"""Two faces of data poisoning on one data set: the attack and the certified defense.

    **The backdoor.** A fraction :math:`\varepsilon` (the poison rate) of the images labelled
    ``target`` are images of other classes stamped with a trigger
    (:func:`robustlab.poisoning.backdoor`, Gu et al.'s BadNets). A base model trained on
    that set keeps its clean accuracy while the trigger turns test inputs into ``target``:
    :meth:`backdoor` reports both (:func:`robustlab.poisoning.backdoor_success`).

    **The certificate.** Deep Partition Aggregation (Levine and Feizi, 2021) with :math:`k`
    partitions, trained on the *clean* set (:func:`robustlab.poisoning.train_dpa`): a test
    input whose vote gap gives :math:`\lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1]) / 2
    \rfloor \ge r` keeps its prediction under any :math:`r` inserted or deleted training
    samples. :meth:`certificates` reports the certified accuracy at poison size :math:`r`.

    Every trained model is cached in memory (and the DPA ensembles on disk), so moving a
    slider back is instant.

    Parameters
    ----------
    dataset : str, optional
        Default: the active profile's.
    target : int
        The class the backdoor produces.
    trigger : Trigger, optional
        Default: a 2x2 white square in the bottom-right corner.
    source : int, optional
        Take the poisoned images from this class only (success is then measured on it).
    arch, width, epochs : str, int, int
        The base model of both halves (an MLP of width 2 by default) and its training epochs.
    n_test : int, optional
        Evaluate on a seeded subset of the test set of this size (default: all of it).
    seed : int
        Seeds the poison, the models and the test subset.

    Examples
    --------
    >>> demo = PoisoningExplorer("digits", n_test=100, epochs=3)
    >>> out = demo.certificates(k=5, poison_size=0)
    >>> out["certified_accuracy"] == out["clean_accuracy"], int(out["radius"].shape[0])
    (True, 100)
    """

    RATE_MAX = 0.5

    def __init__(self, dataset: str | None = None, *, target: int = 0, trigger: _P.Trigger | None = None,
                 source: int | None = None, arch: str = "mlp", width: int | None = 2, epochs: int = 30,
                 n_test: int | None = None, seed: int = 0):
        self.info = _data.info(dataset)
        self.train, test = _data.load(self.info.name)
        target = check_class_index(target, "target", self.info.n_classes)
        self.target, self.source = target, source
        self.trigger = _P.Trigger() if trigger is None else trigger
        if not isinstance(self.trigger, _P.Trigger):
            raise TypeError(f"trigger must be a robustlab.poisoning.Trigger, got {type(self.trigger).__name__}")
        if arch not in ("mlp", "cnn"):
            raise ValueError(f"arch must be one of ['cnn', 'mlp'], got {arch!r}")
        self.arch, self.width = arch, width
        self.epochs = check_positive_int(epochs, "epochs")
        self.seed = check_seed(seed)
        if n_test is not None:
            test = _data.subset(test, check_positive_int(n_test, "n_test"), seed=seed)
        self.test = test
        self._backdoor = {}
        self._ensembles = {}

    # ------------------------------------------------------------------ computations

    def _rate(self, rate) -> float:
        return round(check_interval(rate, "rate", 0.0, self.RATE_MAX), 6)

    def backdoor_model(self, rate: float) -> torch.nn.Module:
        """The base model trained on the set with a backdoor at poison rate ``rate`` (cached)."""
        rate = self._rate(rate)
        if rate not in self._backdoor:
            poisoned, mask = _P.backdoor(self.train, rate, self.target, self.trigger, source=self.source,
                                         seed=self.seed, n_classes=self.info.n_classes)
            model = _models.build(self.arch, self.info.name, width=self.width, seed=self.seed)
            _train.fit(model, poisoned, epochs=self.epochs, lr=2e-3, batch_size=64, seed=self.seed, progress=False)
            self._backdoor[rate] = (model.eval(), int(mask.sum()))
        return self._backdoor[rate][0]

    def backdoor(self, rate: float) -> dict:
        """Clean accuracy and backdoor success of the model trained at poison rate ``rate``."""
        model = self.backdoor_model(rate)
        rate = self._rate(rate)
        return {"rate": rate, "n_poisoned": self._backdoor[rate][1],
                "clean_accuracy": _train.evaluate(model, self.test),
                "success": _P.backdoor_success(model, self.test, self.target, self.trigger, source=self.source)}

    def ensemble(self, k: int) -> _P.PartitionEnsemble:
        """The DPA ensemble with ``k`` partitions, trained on the clean set (cached, also on disk)."""
        k = check_positive_int(k, "k")
        if k not in self._ensembles:
            ens = _P.train_dpa(self.train, k, arch=self.arch, dataset=self.info.name, width=self.width,
                               epochs=self.epochs, seed=self.seed, progress=False, cache=True)
            self._ensembles[k] = (ens, ens.certify(self.test.x))
        return self._ensembles[k][0]

    def certificates(self, k: int, poison_size: int) -> dict:
        """DPA with ``k`` partitions: clean accuracy, certified accuracy at ``poison_size``, every radius."""
        check_positive_int(poison_size, "poison_size", allow_zero=True)
        self.ensemble(k)
        cert = self._ensembles[k][1]
        return {"k": k, "poison_size": poison_size,
                "clean_accuracy": cert.certified_accuracy(self.test.y, at=0),
                "certified_accuracy": cert.certified_accuracy(self.test.y, at=poison_size),
                "radius": cert.radius, "correct": cert.correct(self.test.y)}

    def update(self, rate: float, k: int, poison_size: int) -> dict:
        """Both halves for one setting of the controls: ``{"backdoor": ..., "dpa": ...}``."""
        return {"backdoor": self.backdoor(rate), "dpa": self.certificates(k, poison_size)}

    # ------------------------------------------------------------------ drawing

    def _draw_backdoor(self, ax, rates, rate):
        rows = [self.backdoor(r) for r in rates]
        xs = [100 * r["rate"] for r in rows]
        ax.plot(xs, [r["clean_accuracy"] for r in rows], "o-", color="C0", label="clean accuracy")
        ax.plot(xs, [r["success"] for r in rows], "s-", color="C3", label="backdoor success")
        if rate is not None:
            now = self.backdoor(rate)
            ax.axvline(100 * now["rate"], color="0.5", ls=":", lw=1)
            ax.set_title(f"poison rate {100 * now['rate']:.0f}% of class {self.target} ({now['n_poisoned']} images): "
                         f"clean {now['clean_accuracy']:.2f}, success {now['success']:.2f}", fontsize=9)
        else:
            ax.set_title("a backdoor against its poison rate", fontsize=9)
        ax.set_xlabel(f"poisoned fraction of label {self.target} (%)")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=8, loc="center right")

    def _draw_dpa(self, ax, ks, k, poison_size):
        top = max(int(self.certificates(kk, 0)["radius"].max()) for kk in ks)
        sizes = list(range(0, max(top, 0) + 2))
        for i, kk in enumerate(ks):
            acc = [self.certificates(kk, r)["certified_accuracy"] for r in sizes]
            ax.step(sizes, acc, where="post", color=f"C{i}", label=f"k = {kk}")
        if k is not None:
            now = self.certificates(k, poison_size)
            ax.plot([poison_size], [now["certified_accuracy"]], "ko", ms=6)
            ax.set_title(f"DPA, k = {k}: certified accuracy {now['certified_accuracy']:.2f} "
                         f"against {poison_size} poisoned samples", fontsize=9)
        else:
            ax.set_title("DPA: certified accuracy against the poison size", fontsize=9)
        ax.set_xlabel("poison size r (insertions or deletions)")
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=8)

    def snapshot(self, rates=(0.0, 0.02, 0.05, 0.1, 0.2), ks=(10, 50)):
        """A static figure (for the printed book): the backdoor over ``rates``, DPA over ``ks``."""
        import matplotlib.pyplot as plt

        rates, ks = list(rates), list(ks)
        if not rates:
            raise ValueError("rates must hold at least one poison rate")
        if not ks:
            raise ValueError("ks must hold at least one number of partitions")
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
        self._draw_backdoor(a, rates, None)
        self._draw_dpa(b, ks, None, 0)
        fig.tight_layout()
        return fig

    def widget(self, *, rates=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3), ks=(5, 10, 20, 50), max_poison: int = 30):
        """The live demo: a poison-rate slider for the backdoor, ``k`` and poison-size controls for DPA."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        rates = [self._rate(r) for r in rates]
        ks = [check_positive_int(k, "ks") for k in ks]
        check_positive_int(max_poison, "max_poison")
        rate = W.SelectionSlider(options=rates, value=rates[min(3, len(rates) - 1)], description="poison rate",
                                 continuous_update=False)
        k = W.Dropdown(options=ks, value=ks[min(1, len(ks) - 1)], description="k")
        size = W.IntSlider(value=1, min=0, max=max_poison, description="poison size", continuous_update=False)

        def draw():
            self.update(rate.value, k.value, size.value)
            fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
            self._draw_backdoor(a, [r for r in rates if r <= rate.value], rate.value)
            self._draw_dpa(b, [k.value], k.value, size.value)
            return fig

        return live([[rate, k, size]], draw)
