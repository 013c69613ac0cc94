"""The shared statistics (robustlab.stats): Clopper-Pearson and the binomial test equal
scipy's, and every bound keeps its coverage (exactly over all outcomes, and by simulation)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, binomtest, norm

from robustlab import stats

# A count above this quantile of Bin(reps, alpha) has probability below 1e-6 under a
# correct bound: the tests are not flaky, and a wrong bound exceeds it by far.
TAIL = 1 - 1e-6


# --------------------------------------------------------------------------- Clopper-Pearson


@pytest.mark.parametrize("n", [1, 2, 7, 40, 333])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
def test_clopper_pearson_equals_scipys_exact_interval(n, alpha):
    k = np.arange(n + 1)
    lo, hi = stats.clopper_pearson(k, n, alpha, side="two-sided")
    lower = stats.clopper_pearson(k, n, alpha / 2)
    upper = stats.clopper_pearson(k, n, alpha / 2, side="upper")
    assert np.array_equal(lo, lower) and np.array_equal(hi, upper), "two-sided = both one-sided bounds at alpha/2"
    for ki in np.unique(np.r_[k[:3], k[-3:], k[::max(1, n // 12)]]):
        ci = binomtest(int(ki), n).proportion_ci(confidence_level=1 - alpha, method="exact")
        # scipy finds the ends by root-finding (to about 1e-10), this by the beta quantile
        assert lo[ki] == pytest.approx(ci.low, rel=1e-8, abs=1e-13)
        assert hi[ki] == pytest.approx(ci.high, rel=1e-8, abs=1e-13)


def test_clopper_pearson_edges_shapes_and_types():
    n, alpha = 50, 0.01
    k = np.arange(n + 1)
    lower, upper = stats.clopper_pearson(k, n, alpha), stats.clopper_pearson(k, n, alpha, side="upper")
    assert np.allclose(lower[1:], beta.ppf(alpha, k[1:], n - k[1:] + 1))
    # k = 0 and k = n: P(K = n) = p^n = alpha gives the bound alpha^(1/n) exactly
    assert lower[0] == 0.0 and upper[-1] == 1.0
    assert lower[-1] == pytest.approx(alpha ** (1 / n), rel=1e-12)
    assert upper[0] == pytest.approx(1 - alpha ** (1 / n), rel=1e-12)
    assert np.all(np.diff(lower) > 0) and np.all(np.diff(upper) > 0) and np.all(lower < upper)
    grid = stats.clopper_pearson(torch.tensor([[0], [3], [10]]), np.array([10, 20, 30, 40]), alpha)
    assert grid.shape == (3, 4) and grid[1, 2] == pytest.approx(beta.ppf(alpha, 3, 28))
    assert isinstance(stats.clopper_pearson(3, 10, 0.05), float)
    assert isinstance(stats.clopper_pearson(np.int64(3), np.int64(10), np.float32(0.05)), float)
    assert isinstance(stats.clopper_pearson(torch.tensor(3), 10, 0.05), np.ndarray), "a tensor in, an array out"


@pytest.mark.parametrize("n", [10, 50])
def test_clopper_pearson_coverage_is_exact_for_every_p(n):
    """P(lower > p) <= alpha and P(upper < p) <= alpha for every p, over all outcomes k, and
    nearly attained (the bound is valid and not needlessly loose)."""
    alpha = 0.05
    k = np.arange(n + 1)
    lower = stats.clopper_pearson(k, n, alpha)
    upper = stats.clopper_pearson(k, n, alpha, side="upper")
    ps = np.unique(np.concatenate([np.linspace(0.001, 0.999, 999), lower[1:] - 1e-9, upper[:-1] + 1e-9]))
    ps = ps[(ps > 0) & (ps < 1)]
    pmf = binom.pmf(k[None, :], n, ps[:, None])
    miss_low = (pmf * (lower[None, :] > ps[:, None])).sum(1)
    miss_up = (pmf * (upper[None, :] < ps[:, None])).sum(1)
    assert miss_low.max() <= alpha + 1e-12 and miss_up.max() <= alpha + 1e-12
    assert miss_low.max() > 0.5 * alpha and miss_up.max() > 0.5 * alpha


def test_clopper_pearson_coverage_by_simulation_and_a_wald_bound_fails_it():
    rng = np.random.default_rng(0)
    n, alpha, reps = 50, 0.05, 20_000
    limit = binom.ppf(TAIL, reps, alpha)
    for p in (0.05, 0.3, 0.5, 0.9, 0.97):
        k = rng.binomial(n, p, size=reps)
        assert int((stats.clopper_pearson(k, n, alpha) > p).sum()) <= limit, p
        assert int((stats.clopper_pearson(k, n, alpha, side="upper") < p).sum()) <= limit, p
        lo, hi = stats.clopper_pearson(k, n, alpha, side="two-sided")
        assert int(((lo > p) | (hi < p)).sum()) <= limit, p
    # the same check catches a bound that is too optimistic: the normal approximation
    k = rng.binomial(n, 0.97, size=reps)
    p_hat = k / n
    wald = p_hat - norm.ppf(1 - alpha) * np.sqrt(p_hat * (1 - p_hat) / n)
    assert (wald > 0.97).sum() > limit


# --------------------------------------------------------------------------- binomial test


def test_binomial_test_equals_scipys_binomtest():
    for n in (1, 2, 7, 20, 101):
        for p in (0.5, 0.3, 0.9):
            for alternative in ("two-sided", "greater", "less"):
                k = np.arange(n + 1)
                mine = stats.binomial_test(k, n, p, alternative=alternative)
                ref = [binomtest(int(ki), n, p, alternative=alternative).pvalue for ki in k]
                assert np.allclose(mine, ref, rtol=1e-9, atol=1e-300), (n, p, alternative)
    for n in (1, 7, 101):
        for k in range(n + 1):
            assert stats.binomial_test_half(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-300)


def test_binomial_test_rejects_a_true_null_at_most_alpha_of_the_time():
    rng = np.random.default_rng(1)
    n, alpha, reps = 60, 0.05, 20_000
    limit = binom.ppf(TAIL, reps, alpha)
    for p in (0.5, 0.2):
        k = rng.binomial(n, p, size=reps)
        pvalues = stats.binomial_test(np.arange(n + 1), n, p)  # the p-value of every outcome, looked up
        assert int((pvalues[k] <= alpha).sum()) <= limit
    # and it has power against a false one
    k = rng.binomial(n, 0.8, size=2000)
    assert float((stats.binomial_test_half(k, n) <= alpha).mean()) > 0.99


# --------------------------------------------------------------------------- Hoeffding and DKW


def test_hoeffding_formula_and_coverage_by_simulation():
    assert stats.hoeffding(200, 0.1) == pytest.approx(math.sqrt(math.log(20) / 400))
    assert stats.hoeffding(200, 0.1, side="lower") == pytest.approx(math.sqrt(math.log(10) / 400))
    assert stats.hoeffding(200, 0.1, value_range=3.0) == pytest.approx(3 * math.sqrt(math.log(20) / 400))
    assert np.allclose(stats.hoeffding(np.array([10, 1000]), 0.05), [stats.hoeffding(10, 0.05), stats.hoeffding(1000, 0.05)])
    rng = np.random.default_rng(2)
    n, alpha, reps = 40, 0.1, 20_000
    limit = binom.ppf(TAIL, reps, alpha)
    t, t_one = stats.hoeffding(n, alpha), stats.hoeffding(n, alpha, side="upper")
    for a, b in ((0.5, 0.5), (5.0, 1.0), (0.2, 0.2)):  # Beta-distributed variables in [0, 1]
        mean = a / (a + b)
        means = rng.beta(a, b, size=(reps, n)).mean(1)
        assert int((np.abs(means - mean) > t).sum()) <= limit
        assert int((means - mean > t_one).sum()) <= limit
    # Bernoulli(1/2), the worst case for the two-sided bound, nearly attains a good part of alpha
    means = rng.binomial(1, 0.5, size=(reps, n)).mean(1)
    assert int((np.abs(means - 0.5) >= t).sum()) > 0.1 * alpha * reps


def test_dkw_band_covers_the_true_cdf_everywhere_by_simulation():
    assert stats.dkw_epsilon(500, 0.05) == pytest.approx(math.sqrt(math.log(40) / 1000))
    rng = np.random.default_rng(3)
    n, alpha, reps = 50, 0.1, 4000
    samples = rng.uniform(size=(reps, n))  # F(t) = t
    values, lower, upper = stats.dkw_band(samples, alpha)
    assert values.shape == lower.shape == upper.shape == (reps, n)
    # the sup over t is reached at the jumps: just before each sample the ECDF is (i - 1)/n
    eps = stats.dkw_epsilon(n, alpha)
    below = np.arange(n) / n
    miss = ((lower > values + 1e-12) | (upper < values - 1e-12) | (below[None, :] - eps > values)).any(1)
    assert int(miss.sum()) <= binom.ppf(TAIL, reps, alpha)
    # the band is not vacuous: half its width misses much more often than alpha
    narrow = (np.abs(np.arange(1, n + 1) / n - values) > eps / 2).any(1)
    assert float(narrow.mean()) > 2 * alpha
    one = stats.dkw_band([0.3, 0.1, 0.2], 0.5)
    assert one[0].tolist() == [0.1, 0.2, 0.3] and bool((one[1] <= one[2]).all())


# --------------------------------------------------------------------------- Bonferroni and Phi


def test_bonferroni_and_the_normal_functions():
    assert stats.bonferroni(0.05, 10) == pytest.approx(0.005) and stats.bonferroni(0.2, np.int64(4)) == pytest.approx(0.05)
    x = np.linspace(-5, 5, 101)
    assert np.allclose(stats.normal_cdf(x), norm.cdf(x), rtol=1e-12, atol=1e-300)
    p = np.linspace(0.001, 0.999, 99)
    assert np.allclose(stats.normal_ppf(p), norm.ppf(p), rtol=1e-12)
    assert np.allclose(stats.normal_cdf(stats.normal_ppf(p)), p)
    assert stats.normal_ppf(0.0) == -math.inf and stats.normal_ppf(1.0) == math.inf
    assert isinstance(stats.normal_cdf(0.3), float)


# --------------------------------------------------------------------------- argument checks


def test_arguments_are_checked_and_named():
    with pytest.raises(ValueError, match="k must be <= n"):
        stats.clopper_pearson(11, 10, 0.05)
    with pytest.raises(ValueError, match="k must be >= 0"):
        stats.clopper_pearson(-1, 10, 0.05)
    with pytest.raises(ValueError, match="n must be >= 1"):
        stats.clopper_pearson(0, 0, 0.05)
    with pytest.raises(TypeError, match="k must be an integer count"):
        stats.clopper_pearson(0.5, 10, 0.05)
    with pytest.raises(ValueError, match="side must be one of"):
        stats.clopper_pearson(5, 10, 0.05, side="both")
    with pytest.raises(ValueError, match=r"alpha must be a probability in \(0, 1\)"):
        stats.clopper_pearson(5, 10, 1.0)
    with pytest.raises(ValueError, match="broadcastable"):
        stats.clopper_pearson([1, 2], [3, 4, 5], 0.05)
    with pytest.raises(ValueError, match="alternative must be one of"):
        stats.binomial_test(3, 10, alternative="two")
    with pytest.raises(ValueError, match="n must be >= 1"):
        stats.hoeffding(0, 0.05)
    with pytest.raises(ValueError, match="value_range"):
        stats.hoeffding(10, 0.05, value_range=0.0)
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        stats.bonferroni(0.05, 0)
    with pytest.raises(ValueError, match="p must hold probabilities"):
        stats.normal_ppf(1.5)
    with pytest.raises(ValueError, match="samples contains NaN"):
        stats.dkw_band([0.1, float("nan")], 0.1)
