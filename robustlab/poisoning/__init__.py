r"""Data poisoning: attacks on the training set, a detector, and certified aggregation (chapter 10).

An adversary who controls part of the *training* set can lower a model's accuracy (label
flipping) or plant a backdoor: a small trigger that turns any test input into a chosen
class while clean accuracy stays high. This module has the attacks, one classic
detector, and the certified defenses of Levine and Feizi:

1. **Attacks.** :func:`label_flip` relabels a fraction of the training set;
   :func:`backdoor` stamps a :class:`Trigger` (a small patch) on images of other classes
   and labels them ``target`` (a dirty-label backdoor, Gu et al.'s BadNets);
   :func:`apply_trigger` stamps it at test time and :func:`backdoor_success` measures the
   attack. Both attacks return a :class:`Poisoned` pair: the poisoned
   :class:`~robustlab.data.Split` and the boolean mask of the poisoned samples.
2. **Spectral signatures** (Tran, Li and Madry, 2018). Poisoned samples of a label leave a
   trace in the top singular direction of that label's centred learned representations:
   :func:`representations`, :func:`spectral_signature_scores`, :func:`spectral_filter`.
3. **Deep Partition Aggregation** (Levine and Feizi, 2021). A deterministic hash of each
   sample (:func:`hash_partition`) splits the training set into :math:`k` partitions; one
   base model per partition; the plurality vote of the :math:`k` models, the lower class
   index winning ties, is certified against
   :math:`\lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1]) / 2 \rfloor` insertions or deletions of
   training samples (:func:`certify_dpa`; the votes are counted by :mod:`robustlab.votes`).
   **SS-DPA** certifies against label flips: its base models see every (unlabeled) training
   input and the labels of one partition (:class:`SSDPA`).
4. **Finite Aggregation** (Wang, Levine and Feizi, 2022): :math:`kd` buckets, each of the
   :math:`kd` base models trains on :math:`d` of them, each bucket feeds :math:`d` models
   (:func:`fa_assignment`, :func:`certify_fa`); :math:`d = 1` is DPA.
5. **The Lethal Dose Conjecture** (Wang, Levine and Feizi, 2022): certified poison size
   against the number of partitions and the base learner's data efficiency, with and
   without data augmentation of the base models (:func:`lethal_dose_study`).

The base models of an aggregation are trained together as one vectorized ensemble
(:func:`train_ensemble`: ``torch.func.stack_module_state`` + ``vmap``, one forward and one
backward pass for all of them), and each base model is a deterministic function of its
own training samples: the partition of a sample depends on the sample alone, the order in
which a model sees its samples depends only on their contents and on the model's index,
and a model whose samples are used up waits without an optimizer step. That is what the
certificates assume, and :mod:`tests.test_poisoning` checks it.

The modules, by concept: :mod:`~robustlab.poisoning.attacks` (label flips, the backdoor),
:mod:`~robustlab.poisoning.spectral` (spectral signatures),
:mod:`~robustlab.poisoning.aggregation` (partitions, the DPA, Finite Aggregation and SS-DPA
certificates), :mod:`~robustlab.poisoning.ensemble` (the vectorized ensemble and its
augmentations) and :mod:`~robustlab.poisoning.lethal_dose` (the Lethal Dose study). Every
public name is importable as ``robustlab.poisoning.NAME``.
"""

from .aggregation import SSDPA, certify_dpa, certify_fa, fa_assignment, fa_shifts, hash_partition
from .attacks import Poisoned, Trigger, apply_trigger, backdoor, backdoor_success, label_flip
from .ensemble import AUGMENTATIONS, PartitionEnsemble, train_dpa, train_ensemble, train_fa
from .lethal_dose import LethalDoseStudy, lethal_dose_study, median_radius
from .spectral import representations, spectral_filter, spectral_signature_scores

__all__ = [
    "Poisoned",
    "Trigger",
    "label_flip",
    "apply_trigger",
    "backdoor",
    "backdoor_success",
    "representations",
    "spectral_signature_scores",
    "spectral_filter",
    "hash_partition",
    "fa_shifts",
    "fa_assignment",
    "certify_dpa",
    "certify_fa",
    "PartitionEnsemble",
    "train_ensemble",
    "train_dpa",
    "train_fa",
    "SSDPA",
    "AUGMENTATIONS",
    "median_radius",
    "LethalDoseStudy",
    "lethal_dose_study",
]
