"""pyro_prune.compare: paired t CIs and McNemar against textbook answers and independent computations."""

import math

import numpy as np
import pytest
import torch

from pyro_prune import compare as cmp
from tests.helpers import assert_close

# Student's (1908) sleep data, Cushny & Peebles: extra hours of sleep of 10 patients under two drugs.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_sleep_data_textbook_answer():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) on group 2 - group 1:
    # t = 4.0621, df = 9, p-value = 0.002833, 95 % CI [0.7001142, 2.4598858], mean difference 1.58.
    d = cmp.paired_difference(SLEEP_2, SLEEP_1)
    assert d.n == 10
    assert_close(d.mean, 1.58, rtol=1e-12)
    assert_close([d.low, d.high], [0.7001142, 2.4598858], rtol=0, atol=1e-7)
    assert_close(d.t, 4.0621, rtol=0, atol=5e-5)
    assert_close(d.p_value, 0.002833, rtol=0, atol=5e-7)
    assert d.resolved
    # hand computation of the same interval from the t quantile 2.262157 (t_{0.975, 9}, printed tables)
    diffs = [b - a for a, b in zip(SLEEP_1, SLEEP_2)]
    sd = float(np.std(diffs, ddof=1))
    assert_close(d.sd, sd, rtol=1e-12)
    assert_close(d.high - d.mean, 2.262157 * sd / math.sqrt(10), rtol=1e-6)


def test_paired_t_against_scipy_on_random_data():
    st = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for k, level in ((2, 0.95), (5, 0.9), (10, 0.99), (40, 0.95)):
        a, b = rng.normal(size=k), rng.normal(0.3, 1.0, size=k)
        d = cmp.paired_difference(a, b, level=level)
        ref = st.ttest_rel(a, b)
        assert_close(d.t, float(ref.statistic), rtol=1e-10)
        assert_close(d.p_value, float(ref.pvalue), rtol=1e-8, atol=1e-14)
        lo, hi = st.t.interval(level, k - 1, loc=np.mean(a - b), scale=st.sem(a - b))
        assert_close([d.low, d.high], [lo, hi], rtol=1e-10)


def test_t_distribution_against_scipy_and_tables():
    st = pytest.importorskip("scipy.stats")
    # textbook table values of t_{0.975, df}
    for df, table in ((1, 12.706), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert_close(cmp.t_quantile(0.975, df), table, rtol=0, atol=5e-4)
    for df in (1, 2.5, 9, 100):
        for p in (1e-6, 0.025, 0.3, 0.5, 0.9, 0.999):
            assert_close(cmp.t_quantile(p, df), float(st.t.ppf(p, df)), rtol=1e-9, atol=1e-12)
        for t in (-30.0, -2.0, 0.0, 0.7, 5.0):
            assert_close(cmp.t_cdf(t, df), float(st.t.cdf(t, df)), rtol=1e-10, atol=1e-15)
    assert cmp.t_cdf(math.inf, 3) == 1.0 and cmp.t_cdf(-math.inf, 3) == 0.0


def test_paired_difference_zero_variance():
    same = cmp.paired_difference([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (same.mean, same.sd, same.low, same.high, same.t, same.p_value) == (0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert not same.resolved
    shift = cmp.paired_difference(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), np.array([0.5, 1.5, 2.5]))
    assert_close([shift.mean, shift.sd, shift.low, shift.high], [0.5, 0.0, 0.5, 0.5], rtol=1e-12)
    assert shift.t == math.inf and shift.p_value == 0.0 and shift.resolved
    assert shift.to_dict()["t"] == "inf"


def test_mcnemar_chi_square_agresti_example():
    # Agresti (2013) Table 11.1, presidential approval: 794 / 150 / 86 / 570, b = 150, c = 86.
    yes_yes, yes_no, no_yes, no_no = 794, 150, 86, 570
    a = [True] * (yes_yes + yes_no) + [False] * (no_yes + no_no)
    b = [True] * yes_yes + [False] * yes_no + [True] * no_yes + [False] * no_no
    r = cmp.mcnemar(a, b)
    assert (r.b, r.c, r.exact) == (150, 86, False)
    assert_close(r.statistic, 63**2 / 236, rtol=1e-12)  # (|150 - 86| - 1)^2 / 236 = 16.82
    assert_close(r.p_value, math.erfc(math.sqrt(63**2 / 236 / 2)), rtol=1e-12)
    plain = cmp.mcnemar(a, b, correction=False)
    assert_close(plain.statistic, 17.36, rtol=0, atol=5e-3)  # Agresti's z^2 = 4.17^2 = 17.36
    assert_close(plain.p_value, 3.1e-5, rtol=0.02)  # chi^2_1 tail


def test_mcnemar_exact_hand_computed():
    # b = 1, c = 5: n = 6, p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    a = torch.tensor([True, False, False, False, False, False, True, False])
    b = torch.tensor([False, True, True, True, True, True, True, False])
    r = cmp.mcnemar(a, b)
    assert (r.b, r.c, r.exact, r.statistic) == (1, 5, True, 1.0)
    assert r.p_value == 14 / 64
    # symmetric in the direction, and b = c gives p = 1
    assert cmp.mcnemar(b, a).p_value == 14 / 64
    assert cmp.mcnemar_counts(3, 3, exact=True).p_value == 1.0
    # b = 0, c = 10: 2 / 2^10
    assert cmp.mcnemar_counts(0, 10).p_value == 2 / 1024
    # forcing the chi-square on small counts, and the exact test on large ones (against scipy's binomial test)
    assert not cmp.mcnemar_counts(1, 5, exact=False).exact
    st = pytest.importorskip("scipy.stats")
    big = cmp.mcnemar_counts(40, 62, exact=True)
    assert_close(big.p_value, float(st.binomtest(40, 102, 0.5).pvalue), rtol=1e-10)


def test_mcnemar_no_discordant_pairs():
    r = cmp.mcnemar([True, False, True], [True, False, True])
    assert (r.b, r.c, r.statistic, r.p_value) == (0, 0, 0.0, 1.0)


def _records(accs, seed):
    rng = np.random.default_rng(seed)
    return [{"accuracy": a, "nll": 1 - a, "correct": (rng.random(50) < a).tolist()} for a in accs]


def test_summarize_and_markdown():
    results = {"dense": _records([0.98, 0.97, 0.99], 0), "ours": _records([0.96, 0.96, 0.97], 1)}
    s = cmp.summarize(results, reference="dense")
    assert s.metrics == ("accuracy", "nll")
    assert s["dense"].difference == {} and s["dense"].mcnemar is None
    ours = s["ours"]
    assert_close(ours.mean["accuracy"], (0.96 + 0.96 + 0.97) / 3, rtol=1e-12)
    assert_close(ours.sd["accuracy"], float(np.std([0.96, 0.96, 0.97], ddof=1)), rtol=1e-12)
    expected = cmp.paired_difference([0.96, 0.96, 0.97], [0.98, 0.97, 0.99])
    assert ours.difference["accuracy"] == expected
    # McNemar pools the per-split discordant counts
    b = c = 0
    for ra, rb in zip(results["ours"], results["dense"]):
        one = cmp.mcnemar(ra["correct"], rb["correct"])
        b, c = b + one.b, c + one.c
    assert (ours.mcnemar.b, ours.mcnemar.c) == (b, c)
    table = s.to_markdown()
    lines = table.splitlines()
    assert lines[0].startswith("| method | accuracy % | nll | Δ accuracy % vs dense (95 % CI)")
    assert "| ours | 96.33 ± 0.58 |" in lines[3]
    assert f"{expected.mean * 100:+.2f} [{expected.low * 100:+.2f}, {expected.high * 100:+.2f}]" in lines[3]
    assert f"{b} / {c}, p=" in lines[3]
    assert s.to_dict()["methods"][1]["difference"]["accuracy"]["n"] == 3


def test_summarize_one_split_has_no_intervals():
    s = cmp.summarize({"a": [{"accuracy": 0.9}], "b": [{"accuracy": 0.8}]}, reference="a")
    assert s["b"].difference == {} and s["b"].sd["accuracy"] == 0.0
    assert "—" in s.to_markdown(differences=["accuracy"])


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: cmp.paired_difference([1.0], [2.0]), ValueError, "len(a)"),
        (lambda: cmp.paired_difference([1.0, 2.0], [2.0]), ValueError, "same length"),
        (lambda: cmp.paired_difference([1.0, float("nan")], [1.0, 2.0]), ValueError, "a[1]"),
        (lambda: cmp.paired_difference([1.0, "x"], [1.0, 2.0]), TypeError, "a[1]"),
        (lambda: cmp.paired_difference("ab", [1.0, 2.0]), TypeError, "a must be a sequence"),
        (lambda: cmp.paired_difference(torch.ones(2, 2), torch.ones(2, 2)), ValueError, "1-D"),
        (lambda: cmp.paired_difference([1.0, 2.0], [1.0, 3.0], level=1.0), ValueError, "level"),
        (lambda: cmp.mcnemar([1, 0], [True, False]), TypeError, "correct_a[0]"),
        (lambda: cmp.mcnemar([True], [True, False]), ValueError, "same length"),
        (lambda: cmp.mcnemar([True], [True], exact=1), TypeError, "exact"),
        (lambda: cmp.mcnemar_counts(-1, 2), ValueError, "b must be >= 0"),
        (lambda: cmp.t_quantile(0.0, 3), ValueError, "p"),
        (lambda: cmp.t_quantile(0.5, 0), ValueError, "df"),
        (lambda: cmp.summarize({}, reference="a"), TypeError, "results"),
        (lambda: cmp.summarize({"a": [{"acc": 1.0}]}, reference="b"), ValueError, "reference 'b'"),
        (lambda: cmp.summarize({"a": [{"acc": 1.0}], "b": []}, reference="a"), ValueError, "same number"),
        (lambda: cmp.summarize({"a": [{"acc": 1.0}], "b": [{"x": 1.0}]}, reference="a"), ValueError, "no metric"),
        (lambda: cmp.summarize({"a": [3]}, reference="a"), TypeError, "results['a'][0]"),
    ],
)
def test_bad_inputs(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)
