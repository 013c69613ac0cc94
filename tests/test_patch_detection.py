"""Segment and Complete (robustlab.patch_detection): square completion, its guarantee, training, errors."""

import math

import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab import patch_detection as pd


def square(h, w, r, c, s, b=1):
    return pd.square_mask(torch.full((b,), r), torch.full((b,), c), s, (h, w))


def corners(h, w, s):
    return [(r, c) for r in range(h - s + 1) for c in range(w - s + 1)]


# --------------------------------------------------------------------------- distances and completion


def test_distances_equal_the_brute_force_hamming_distance_to_every_square():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(4, 1, 6, 7, generator=g) < 0.3
    for s in (1, 2, 3, 6):
        d = pd.square_distances(m, s)
        assert d.shape == (4, 6 - s + 1, 7 - s + 1)
        for r, c in corners(6, 7, s):
            brute = (m ^ square(6, 7, r, c, s, b=4)).flatten(1).sum(1)
            assert torch.equal(d[:, r, c], brute), (s, r, c)


def test_a_perfect_mask_completes_to_exactly_its_square_at_every_position_borders_included():
    # the reference code's off-by-one could never match a square at row 0 or column 0
    for s in (2, 3):
        for r, c in corners(8, 8, s):
            p = square(8, 8, r, c, s)
            out = pd.complete_squares(p, s)
            assert torch.equal(out.mask, p), (s, r, c)
            assert out.level.tolist() == [0]


def test_a_mask_covering_part_of_a_square_completes_to_the_whole_square():
    # 3x3 patch, gamma 0.5: budget 4.5, so up to 4 missed pixels still complete to the square
    g = torch.Generator().manual_seed(1)
    for r, c in [(0, 0), (2, 3), (5, 5), (0, 5)]:
        p = square(8, 8, r, c, 3)
        for missed in range(1, 5):
            idx = p.flatten().nonzero().flatten()
            drop = idx[torch.randperm(idx.numel(), generator=g)[:missed]]
            m = p.clone().flatten()
            m[drop] = False
            out = pd.complete_squares(m.view(p.shape), 3, gamma=0.5, levels=1)
            assert bool(pd.covers(out.mask, p)), (r, c, missed)
            assert out.selected[3][0, r, c]


def test_threshold_boundary_is_strict_and_tight():
    # side 4, gamma 0.25: budget gamma * s^2 = 4 exactly
    p = square(8, 8, 2, 2, 4)
    m3 = p.clone()
    m3[0, 0, 2, 2:5] = False                    # 3 missed pixels: d = 3 < 4, completed
    out = pd.complete_squares(m3, 4, gamma=0.25, levels=1)
    assert bool(pd.covers(out.mask, p)) and out.level.tolist() == [0]
    m4 = p.clone()
    m4[0, 0, 2, 2:6] = False                    # the whole top row missed: d = 4, not < 4
    assert int(pd.square_distances(m4, 4)[0, 2, 2]) == 4
    out = pd.complete_squares(m4, 4, gamma=0.25, levels=1)
    assert not out.selected[4][0, 2, 2]
    assert not bool(pd.covers(out.mask, p))     # just beyond the budget the patch is not covered
    assert out.level.tolist() == [-1] and not bool(out.mask.any())
    # one relaxation (gamma_1 = 1 - 0.75 * 0.7 = 0.475, budget 7.6) selects P and its shift by one row
    out = pd.complete_squares(m4, 4, gamma=0.25, decay=0.7, levels=2)
    assert out.level.tolist() == [1] and bool(pd.covers(out.mask, p))
    assert int(out.mask.sum()) == 20


@pytest.mark.parametrize("s,gamma", [(2, 0.3), (3, 0.3), (3, 0.5), (4, 0.2)])
def test_brute_force_guarantee_over_positions_and_flips(s, gamma):
    """Every raw mask within Hamming distance < gamma s^2 of the true square completes to cover it,
    at level 0, and every selected square lies within 2 gamma s^2 of it."""
    g = torch.Generator().manual_seed(s * 10 + int(gamma * 10))
    budget = math.ceil(gamma * s * s) - 1
    for r, c in corners(8, 8, s):
        p = square(8, 8, r, c, s)
        for trial in range(3):
            flips = torch.randperm(64, generator=g)[:budget] if trial else torch.arange(0)
            m = p.clone().flatten()
            m[flips] ^= True
            m = m.view(p.shape)
            assert int((m ^ p).sum()) < gamma * s * s
            out = pd.complete_squares(m, s, gamma=gamma)
            assert out.level.tolist() == [0]
            assert bool(pd.covers(out.mask, p)), (r, c, flips.tolist())
            d_to_p = pd.square_distances(p, s)[0]
            assert bool((d_to_p[out.selected[s][0]] < 2 * gamma * s * s).all())


def test_small_gamma_completes_to_exactly_the_patch():
    # with 2 gamma s^2 <= 2s (gamma <= 1/s) no other square of side s is close enough: C(M) = P
    p = square(8, 8, 3, 1, 3)
    m = p.clone()
    m[0, 0, 3, 1] = False
    m[0, 0, 7, 7] = True
    out = pd.complete_squares(m, 3, gamma=0.3)
    assert torch.equal(out.mask, p)


def test_several_candidate_sides():
    p = square(8, 8, 1, 4, 3)
    m = p.clone()
    m[0, 0, 2, 5] = False
    out = pd.complete_squares(m, (2, 3, 4), gamma=0.2)
    assert bool(pd.covers(out.mask, p)) and out.level.tolist() == [0]
    assert set(out.selected) == {2, 3, 4}


def test_larger_budget_never_shrinks_the_selection():
    g = torch.Generator().manual_seed(3)
    m = torch.rand(20, 1, 8, 8, generator=g) < 0.15
    prev = None
    for gamma in (0.1, 0.2, 0.35, 0.5, 0.8, 1.0):
        sel = pd.complete_squares(m, 3, gamma=gamma, levels=1).selected[3]
        if prev is not None:
            assert not bool((prev & ~sel).any()), gamma
        prev = sel


def test_an_empty_mask_never_completes():
    out = pd.complete_squares(torch.zeros(3, 1, 8, 8, dtype=torch.bool), (2, 3), levels=15)
    assert not bool(out.mask.any()) and out.level.tolist() == [-1, -1, -1]


def test_relaxation_is_per_image():
    p = square(8, 8, 0, 0, 3, b=2)
    m = p.clone()
    m[1, 0, 0, :] = False                      # image 1 misses a whole row: d = 3 >= 0.9
    out = pd.complete_squares(m, 3)
    assert out.level[0] == 0 and out.level[1] > 0
    assert torch.equal(out.mask[0], p[0])


# --------------------------------------------------------------------------- the guarantee, end to end


class BrightPixels(nn.Module):
    """A known segmenter: a pixel belongs to the patch iff its value exceeds 0.75."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return 50.0 * (x - 0.75) + 0 * self.dummy


def test_if_the_completed_mask_covers_the_patch_no_content_changes_the_masked_image():
    """Brute force over patch contents: whenever the completed mask covers the patch, the masked
    attacked image equals the masked clean image and the prediction equals the classifier's on it."""
    seg = BrightPixels()
    clf = rl.models.build("mlp", "digits", width=1)
    train, _ = rl.data.load("digits")
    x = train.x[:6] * 0.5                      # clean pixels <= 0.5: never flagged
    s, gamma, r, c = 3, 0.3, 2, 3
    p = square(8, 8, r, c, s, b=6)
    g = torch.Generator().manual_seed(0)
    contents = [torch.rand(x.shape, generator=g) for _ in range(30)]
    contents += [torch.ones_like(x), torch.full_like(x, 0.8)]
    for k in range(1, 4):                      # k patch pixels dark enough to fool the segmenter
        cont = torch.ones_like(x)
        cont.view(6, -1)[:, p[0].flatten().nonzero().flatten()[:k]] = 0.6
        contents.append(cont)
    seen_covered = 0
    for cont in contents:
        x_adv = pd.paste_patch(x, p, cont)
        out = pd.defend(seg, clf, x_adv, side=s, gamma=gamma, union=False)
        cov = pd.covers(out.completed_mask, p)
        missed = (p & (cont <= 0.75)).flatten(1).sum(1)
        assert bool(cov[missed < gamma * s * s].all())      # the premise holds -> covered
        clean_masked = x.masked_fill(out.completed_mask, 0.0)
        assert torch.equal(out.masked[cov], clean_masked[cov])
        assert torch.equal(out.prediction[cov], rl.train.predict(clf, clean_masked)[cov])
        seen_covered += int(cov.sum())
    assert seen_covered > 0
    # a patch that fools the segmenter escapes: nothing is detected, the guarantee says nothing
    fooled = pd.defend(seg, clf, pd.paste_patch(x, p, torch.full_like(x, 0.7)), side=s, gamma=gamma)
    assert not bool(fooled.detected.any())


def test_defend_on_clean_images_matches_the_classifier_when_nothing_is_detected():
    seg = BrightPixels()
    clf = rl.models.build("mlp", "digits", width=1)
    x = torch.rand(5, 1, 8, 8) * 0.5
    out = pd.defend(seg, clf, x, side=3)
    assert not bool(out.detected.any()) and torch.equal(out.masked, x)
    assert torch.equal(out.prediction, rl.train.predict(clf, x))
    a = pd.defend(seg, clf, x, side=3, batch_size=2)
    assert torch.equal(a.prediction, out.prediction)


def test_attacks_change_one_known_square_and_are_reproducible():
    seg = pd.build_segmenter(dataset="digits", width=2)
    clf = rl.models.build("mlp", "digits", width=1)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    for attack in (lambda: pd.adaptive_patch(seg, clf, x, y, side=3, steps=2, tries=2, seed=1),
                   lambda: pd.transfer_patch(clf, x, y, side=3, steps=2, seed=1)):
        a, b = attack(), attack()
        assert torch.equal(a.x, b.x)
        assert torch.equal(a.x[~a.patch_mask.expand_as(x)], x[~a.patch_mask.expand_as(x)])
        assert float(a.x.min()) >= 0 and float(a.x.max()) <= 1
        assert torch.equal(a.patch_mask, pd.square_mask(a.rows, a.cols, 3, (8, 8)))


def test_evaluate_reports_fractions_and_a_consistent_guarantee():
    seg = BrightPixels()
    clf = rl.models.build("mlp", "digits", width=1)
    _, test = rl.data.load("digits")
    data = (test.x[:12] * 0.5, test.y[:12])
    ev = pd.evaluate(seg, clf, data, side=3, steps=2, tries=1, gamma=0.3)
    assert ev.n == 12 and ev.side == 3
    for name in ("clean_accuracy", "robust_accuracy", "coverage", "transfer_coverage", "false_alarm"):
        assert 0.0 <= getattr(ev, name) <= 1.0
    assert ev.false_alarm == 0.0
    assert ev.consistent == 1.0 or math.isnan(ev.consistent)


# --------------------------------------------------------------------------- training


def test_segmenter_training_reduces_the_mask_loss():
    train, _ = rl.data.load("digits")
    x, y = train.x[:192], train.y[:192]
    loss = pd.PatchMaskLoss(3, content="mixed")
    seg = pd.build_segmenter(dataset="digits", width=8, seed=0)

    def held_out():
        torch.manual_seed(123)
        xp, t = loss.patched(train.x[200:400])
        with torch.no_grad():
            return float(nn.functional.binary_cross_entropy_with_logits(seg(xp), t.float()))

    before = held_out()
    hist = rl.train.fit(seg, (x, y), epochs=4, lr=5e-3, batch_size=32, loss_fn=loss, progress=False)
    after = held_out()
    assert after < 0.7 * before, (before, after)
    assert hist.loss[-1] < hist.loss[0]
    assert 0.0 <= hist.train_acc[-1] <= 1.0


def test_training_losses_are_cacheable_and_draw_inside_the_image():
    loss = pd.PatchMaskLoss(3, steps=1)
    assert "PatchMaskLoss(side=3" in repr(loss)
    torch.manual_seed(0)
    xp, t = loss.patched(torch.zeros(50, 1, 8, 8))
    assert t.dtype == torch.bool and set(t.flatten(1).sum(1).tolist()) <= {0, 9}
    assert torch.equal(xp[~t], torch.zeros(int((~t).sum())))
    seg = pd.build_segmenter(dataset="digits", width=2)
    l, scores = loss(seg, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 9]))
    assert scores.shape == (4, 11) and l.requires_grad
    clf = rl.models.build("mlp", "digits", width=1)
    _, logits = pd.MaskedTrainingLoss(3, p=1.0)(clf, torch.rand(4, 1, 8, 8), torch.arange(4))
    assert logits.shape == (4, 10)


@pytest.mark.slow
def test_trained_digits_pipeline_covers_transfer_patches():
    seg = pd.segmenter_model(epochs=8, progress=False)
    clf = pd.classifier_model(epochs=8, progress=False)
    _, test = rl.data.load()
    ev = pd.evaluate(seg.model, clf.model, test, n=80, steps=10, tries=1)
    assert ev.undefended_accuracy > 0.8 and ev.clean_accuracy > 0.7
    assert ev.transfer_coverage > 0.3
    assert ev.consistent == 1.0
    assert pd.segmenter_model(epochs=8, progress=False).history.from_cache


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_errors_that_name_the_argument():
    m = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    with pytest.raises(TypeError, match="mask"):
        pd.complete_squares(m.float(), 3)
    with pytest.raises(ValueError, match="mask"):
        pd.complete_squares(m[:, 0], 3)
    with pytest.raises(ValueError, match="sizes"):
        pd.complete_squares(m, 9)
    with pytest.raises(ValueError, match="sizes"):
        pd.complete_squares(m, 0)
    with pytest.raises(TypeError, match="sizes"):
        pd.complete_squares(m, ())
    with pytest.raises(ValueError, match="gamma"):
        pd.complete_squares(m, 3, gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        pd.complete_squares(m, 3, gamma=1.5)
    with pytest.raises(ValueError, match="decay"):
        pd.complete_squares(m, 3, decay=0.0)
    with pytest.raises(ValueError, match="levels"):
        pd.complete_squares(m, 3, levels=0)
    with pytest.raises(ValueError, match="side"):
        pd.square_distances(m, 10)
    with pytest.raises(ValueError, match="rows"):
        pd.square_mask(torch.tensor([6]), torch.tensor([0]), 3, (8, 8))
    with pytest.raises(ValueError, match="completed and patch_mask"):
        pd.covers(m, m[:1])
    seg, clf = BrightPixels(), rl.models.build("mlp", "digits", width=1)
    with pytest.raises(ValueError, match="x"):
        pd.defend(seg, clf, torch.rand(2, 1, 8, 8) * 2, side=3)
    with pytest.raises(ValueError, match="threshold"):
        pd.defend(seg, clf, torch.rand(2, 1, 8, 8), side=3, threshold=1.0)
    with pytest.raises(ValueError, match="segmenter"):
        pd.defend(clf, clf, torch.rand(2, 1, 8, 8), side=3)
    with pytest.raises(TypeError, match="classifier"):
        pd.defend(seg, "model", torch.rand(2, 1, 8, 8), side=3)
    with pytest.raises(ValueError, match="side"):
        pd.adaptive_patch(seg, clf, torch.rand(2, 1, 8, 8), torch.arange(2), side=(2, 3))
    with pytest.raises(ValueError, match="y"):
        pd.adaptive_patch(seg, clf, torch.rand(2, 1, 8, 8), torch.arange(3), side=3)
    with pytest.raises(ValueError, match="content"):
        pd.PatchMaskLoss(3, content="gaussian")
    with pytest.raises(ValueError, match="clean_fraction"):
        pd.PatchMaskLoss(3, clean_fraction=1.0)
    with pytest.raises(ValueError, match="p"):
        pd.MaskedTrainingLoss(3, p=1.5)
    with pytest.raises(ValueError, match="depth"):
        pd.PatchSegmenter(depth=1)
