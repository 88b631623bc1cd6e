"""The anytime-valid confidence sequences: known answers, time-uniform coverage, and the peeking simulation."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

from study.analysis import simulate
from study.analysis.sequential import (
    FASTER, confidence_sequence, first_decisions, sequential_decision, t_mixture_bayes_factor, t_mixture_radius)


def _bf_by_integration(y, g):
    """Lai's t-mixture Bayes factor straight from its definition, by quadrature on a grid: normal prior
    N(0, g) on the standardised effect delta, right-Haar prior 1/sigma (flat in u = log sigma) on the scale."""
    y = np.asarray(y, float)
    delta = np.linspace(-12, 12, 1201)[:, None]
    u = np.linspace(-9, 9, 1801)[None, :]
    sigma = np.exp(u)
    loglik = stats.norm.logpdf(y[:, None, None], delta * sigma, sigma).sum(axis=0)
    alt = integrate.trapezoid(integrate.trapezoid(np.exp(loglik) * stats.norm.pdf(delta, 0, math.sqrt(g)),
                                                  delta[:, 0], axis=0), u[0])
    null = integrate.trapezoid(np.exp(stats.norm.logpdf(y[:, None], 0, sigma[0]).sum(axis=0)), u[0])
    return alt / null


@pytest.mark.parametrize("g", [2.0])
def test_t_mixture_bayes_factor_matches_its_integral(g):
    y = [0.8, 1.9, -0.3, 1.1, 0.6]
    closed = t_mixture_bayes_factor(y, prior_scale=g)
    assert closed[0] == 1.0
    for n in (2, 5):
        assert closed[n - 1] == pytest.approx(_bf_by_integration(y[:n], g), rel=1e-5)


def test_radius_is_where_the_bayes_factor_reaches_one_over_alpha():
    alpha, g = 0.05, 1.0
    r = t_mixture_radius(np.arange(1, 31), alpha, g)
    assert np.isinf(r[:4]).all() and np.isfinite(r[4:]).all()  # (1 + n g)^(n - 1) > 1 / alpha^2 from n = 5
    assert (np.diff(r[4:]) < 0).all() and (r[4:] > stats.norm.ppf(1 - alpha / 2)).all()
    for n in (5, 9, 30):
        t = r[n - 1]
        nu = n - 1
        # a sample whose t statistic is exactly t: mean t / sqrt(n), unit sd
        z = np.random.default_rng(n).normal(size=n)
        z = (z - z.mean()) / z.std(ddof=1) + t / math.sqrt(n)
        assert stats.ttest_1samp(z, 0).statistic == pytest.approx(t)
        assert t_mixture_bayes_factor(z, prior_scale=g)[-1] == pytest.approx(1 / alpha, rel=1e-9)
        assert nu > 0


def test_t_sequence_is_mean_plus_minus_radius_times_standard_error():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.4, 0.1, 0.35])
    low, high = confidence_sequence(d, intersect=False)
    n = len(d)
    half = t_mixture_radius(n) * d.std(ddof=1) / math.sqrt(n)
    assert low[-1] == pytest.approx(d.mean() - half) and high[-1] == pytest.approx(d.mean() + half)
    assert np.isinf(low[:4]).all()
    il, ih = confidence_sequence(d)
    assert (np.diff(il[4:]) >= 0).all() and (np.diff(ih[4:]) <= 0).all()  # running intersection only narrows
    assert (il >= low).all() and (ih <= high).all()


def test_t_sequence_covers_a_fixed_mean_at_every_n_at_once():
    rng = np.random.default_rng(1)
    mu, sigma = 0.3, 2.0
    d = rng.normal(mu, sigma, size=(2000, 60))
    low, high = confidence_sequence(d, alpha=0.05)
    ever_missed = ((low > mu) | (high < mu)).any(axis=1).mean()
    assert ever_missed <= 0.05
    # ...while a pointwise 95% t-interval, looked at every n, misses far more often
    n = np.arange(2, 61)
    m = np.cumsum(d, axis=1)[:, 1:] / n
    se = np.sqrt((np.cumsum(d * d, axis=1)[:, 1:] - n * m * m) / (n - 1) / n)
    pointwise_missed = (np.abs(m - mu) > stats.t.ppf(0.975, n - 1) * se).any(axis=1).mean()
    assert pointwise_missed > 0.2


def _betting_reference(d, bound, alpha, grid):
    """The hedged-capital CS by explicit loops (Waudby-Smith & Ramdas 2023, eq. 26 bets, c = 1/2)."""
    x = [(v + bound) / (2 * bound) for v in d]
    ms = [k / grid for k in range(1, grid)]
    lows, highs = [], []
    for t in range(1, len(x) + 1):
        inside = []
        for m in ms:
            kp = km = 1.0
            mu_hat_sum, sq = 0.5, 0.25
            var_prev = 0.25
            for i in range(1, t + 1):
                lam = math.sqrt(2 * math.log(2 / alpha) / (var_prev * i * math.log(1 + i)))
                kp *= 1 + min(lam, 0.5 / m) * (x[i - 1] - m)
                km *= 1 - min(lam, 0.5 / (1 - m)) * (x[i - 1] - m)
                mu_hat_sum += x[i - 1]
                sq += (x[i - 1] - mu_hat_sum / (i + 1)) ** 2
                var_prev = sq / (i + 1)
            if 0.5 * kp + 0.5 * km < 1 / alpha:
                inside.append(m)
        lows.append(max(min(inside) - 1 / grid, 0) * 2 * bound - bound)
        highs.append(min(max(inside) + 1 / grid, 1) * 2 * bound - bound)
    return np.array(lows), np.array(highs)


def test_betting_sequence_matches_an_explicit_loop():
    d = np.array([0.4, 0.7, 0.2, 0.9, 0.5, 0.6, 0.8, 0.3])
    low, high = confidence_sequence(d, bound=1.0, method="betting", grid=50, intersect=False)
    ref_low, ref_high = _betting_reference(d, 1.0, 0.05, 50)
    np.testing.assert_allclose(low, ref_low)
    np.testing.assert_allclose(high, ref_high)
    assert low[-1] < d.mean() < high[-1] and high[-1] - low[-1] < high[0] - low[0]
    # distribution-free means slow: eight differences of +0.55 on [-1, 1] still allow 0; thirty do not
    assert low[-1] < 0 < confidence_sequence(np.full(30, 0.55), bound=1.0, method="betting")[0][-1]


def test_betting_sequence_covers_bounded_data():
    rng = np.random.default_rng(2)
    x = rng.beta(2, 5, size=(300, 80))  # mean 2/7 in [0, 1]
    d = 2 * x - 1                        # in [-1, 1], mean 4/7 - 1
    mu = 4 / 7 - 1
    low, high = confidence_sequence(d, bound=1.0, method="betting", grid=200)
    assert ((low > mu) | (high < mu)).any(axis=1).mean() <= 0.05
    assert (high[:, -1] - low[:, -1]).mean() < 0.5  # and it does narrow


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="bound"):
        confidence_sequence([0.1, 0.2], method="betting")
    with pytest.raises(ValueError, match="outside"):
        confidence_sequence([0.1, 2.0], bound=1.0, method="betting")
    with pytest.raises(ValueError, match="method"):
        confidence_sequence([0.1, 0.2], method="bayes")
    with pytest.raises(ValueError, match="finite"):
        confidence_sequence([0.1, np.nan])


def test_a_clear_effect_stops_early_with_the_right_verdict():
    rng = np.random.default_rng(3)
    d = rng.normal(-0.05, 0.02, size=20)  # the claimed-faster arm's error area 0.05 lower, sd 0.02
    dec = sequential_decision(d, alpha=0.05, min_n=4)
    assert dec.verdict == "faster" and dec.n < 20 and dec.high < 0
    assert sequential_decision(-d, min_n=4).verdict == "slower"
    assert sequential_decision(d, min_n=4, direction="higher").verdict == "slower"
    # equivalence: differences tiny against the margin
    eq = sequential_decision(rng.normal(0, 0.002, size=20), margin=0.02, min_n=4)
    assert eq.verdict == "equivalent" and eq.n < 20 and -0.02 < eq.low <= eq.high < 0.02
    # a null without a margin never decides on this draw's worth of seeds
    assert sequential_decision(rng.normal(0, 1, size=6), min_n=4).verdict in ("undecided", "faster", "slower")


def test_null_studies_peeked_at_every_seed_keep_the_false_positive_rate():
    design = simulate.Design()
    rng = np.random.default_rng(4)
    d = simulate.draw(400, 0.0, design, rng)
    seq = simulate.sequential_arm(d, design)
    assert seq["decided_sign"]["rate"] <= 0.05
    assert seq["median_seeds"] == 20  # the null runs to max
    peek = simulate.peeking_arm(d, design)
    assert peek["t"]["significant"]["rate"] > 0.10  # looking at a fixed-n t-test every seed inflates it
    fixed = simulate.fixed_arm(d, design)
    assert 0.02 < fixed["t"]["significant"]["rate"] < 0.09  # a single look at n = 10 is fine


def test_simulated_effect_of_one_sd_is_found_with_fewer_than_max_seeds():
    rows = simulate.simulate(300, effects=(1.0,), seed=5)
    seq = rows[0]["sequential"]
    assert seq["faster"]["rate"] > 0.75 and seq["slower"]["k"] == 0
    assert seq["median_seeds"] < 20
    codes, n, _, _ = first_decisions(np.full((1, 20), -1.0) + np.linspace(-0.1, 0.1, 20), min_n=4)
    assert codes[0] == FASTER and n[0] == 5  # the first n where the t-mixture CS is finite


def test_simulate_command(capsys, tmp_path):
    out = tmp_path / "sim.json"
    assert simulate.main(["--studies", "100", "--effects", "0", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "naive peeking t-test" in text and "| 1 |" in text
    assert out.exists()
    assert simulate.main(["--studies", "3"]) == 2
    assert "--studies" in capsys.readouterr().err


def test_anytime_summary_is_json_ready_and_agrees_with_the_decision():
    import json

    from study.analysis.sequential import anytime_summary

    d = np.random.default_rng(6).normal(-0.05, 0.02, size=12)
    s = anytime_summary(d, min_n=4, partial=True)
    json.dumps(s)  # no inf, no numpy types
    dec = sequential_decision(d, min_n=4)
    assert s["decision"]["verdict"] == dec.verdict == "faster" and s["decision"]["n"] == dec.n
    assert s["sequence"][0]["low"] is None and len(s["sequence"]) == 12  # infinite ends before 5 seeds
    low, high = confidence_sequence(d)
    assert s["interval_now"]["low"] == pytest.approx(low[-1]) and s["interval_now"]["verdict"] == "faster"
    assert anytime_summary([])["n"] == 0
