r"""Paired comparison statistics for benchmarks: methods run on the same splits (and the same test examples).

* :func:`paired_difference`: mean, standard deviation and the paired Student-:math:`t` confidence interval of
  :math:`d_i = a_i - b_i` over :math:`k` paired splits, with the two-sided :math:`t`-test p-value;
* :func:`mcnemar`: McNemar's test for two classifiers scored on the same examples, exact (binomial) or
  :math:`\chi^2` with continuity correction;
* :func:`summarize`: per-method mean ± sd of each metric over the splits and the paired differences (plus McNemar on
  the per-example correctness) of every method against a reference method, as a :class:`Comparison`;
* :meth:`Comparison.to_markdown`: the table the README and the closing notes quote.

No SciPy: the :math:`t` distribution is evaluated through the regularized incomplete beta function (continued
fraction, [3] §6.4) and inverted by bisection; the binomial tail is summed exactly with :func:`math.comb`; the
:math:`\chi^2_1` tail is :math:`\operatorname{erfc}(\sqrt{s/2})`.

Inputs are sequences of numbers, 1-D :class:`torch.Tensor` s or :class:`numpy.ndarray` s; bad inputs raise
:class:`TypeError` or :class:`ValueError` naming the argument.

References

[1] William S. Gosset ("Student"). "The probable error of a mean", Biometrika 6(1), 1908 (the paired :math:`t`;
    its sleep data, Cushny & Peebles 1905, is the worked example of :func:`paired_difference`'s tests).
[2] Quinn McNemar. "Note on the sampling error of the difference between correlated proportions or percentages",
    Psychometrika 12(2), 1947. Alan Agresti, "Categorical Data Analysis", 3rd ed., Wiley 2013, §11.1.
[3] W. H. Press, S. A. Teukolsky, W. T. Vetterling, B. P. Flannery. "Numerical Recipes", 3rd ed., 2007
    (``betacf``: the incomplete beta function by Lentz's continued fraction).
[4] Thomas G. Dietterich. "Approximate statistical tests for comparing supervised classification learning
    algorithms", Neural Computation 10(7), 1998 (McNemar for classifiers on one test set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ._checks import check_bool, check_fraction, check_int, check_real

__all__ = [
    "PairedDifference",
    "McNemar",
    "MethodSummary",
    "Comparison",
    "t_cdf",
    "t_quantile",
    "paired_difference",
    "mcnemar",
    "mcnemar_counts",
    "summarize",
]

#: Below this many discordant pairs :func:`mcnemar` uses the exact binomial test by default.
EXACT_BELOW = 25


# -- the t distribution ----------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, [3] §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    r"""The regularized incomplete beta function :math:`I_x(a, b)`, :math:`x \in [0, 1]`."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    r"""CDF of Student's :math:`t` with ``df`` degrees of freedom,

    .. math:: F(t) = 1 - \tfrac12 I_{\nu / (\nu + t^2)}(\nu/2, 1/2) \quad (t \ge 0), \qquad F(-t) = 1 - F(t).

    :param t: the point (may be infinite).
    :param df: degrees of freedom :math:`\nu > 0`.
    :returns: :math:`P(T \le t)`.
    """
    t = check_real("t", t, allow_inf=True)
    df = check_real("df", df)
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    tail = 0.0 if math.isinf(t) else 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    r"""The quantile :math:`F^{-1}(p)` of Student's :math:`t` with ``df`` degrees of freedom, by bisection on
    :func:`t_cdf` to a relative precision of about :math:`10^{-12}`.

    :param p: probability in :math:`(0, 1)`.
    :param df: degrees of freedom :math:`\nu > 0`.
    :returns: :math:`t_p` with :math:`P(T \le t_p) = p`.
    """
    p = check_fraction("p", p)
    df = check_real("df", df)
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# -- argument handling -----------------------------------------------------------------------------------------
def _as_list(name: str, values: Any) -> List[Any]:
    if hasattr(values, "tolist") and hasattr(values, "ndim"):  # torch.Tensor, numpy.ndarray
        if values.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(values.shape)}")
        return values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence, a 1-D tensor or a 1-D array, got {type(values).__name__}")
    return list(values)


def _as_floats(name: str, values: Any) -> List[float]:
    return [check_real(f"{name}[{i}]", v) for i, v in enumerate(_as_list(name, values))]


def _as_bools(name: str, values: Any) -> List[bool]:
    return [check_bool(f"{name}[{i}]", v) for i, v in enumerate(_as_list(name, values))]


# -- paired t ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedDifference:
    r"""The paired difference :math:`d_i = a_i - b_i`, :math:`i = 1..k`, of two methods on :math:`k` splits.

    :ivar n: number of pairs :math:`k`.
    :ivar mean: :math:`\bar d`.
    :ivar sd: sample standard deviation :math:`s_d` (divisor :math:`k - 1`).
    :ivar low: lower end of the ``level`` confidence interval :math:`\bar d - t_{(1+\ell)/2, k-1} s_d/\sqrt k`.
    :ivar high: upper end of it.
    :ivar level: confidence level :math:`\ell`.
    :ivar t: the statistic :math:`\bar d / (s_d / \sqrt k)` (:math:`\pm\infty` for zero spread and
        :math:`\bar d \ne 0`, 0 when every difference is 0).
    :ivar p_value: two-sided p-value of :math:`H_0: E[d] = 0`, :math:`I_{\nu/(\nu+t^2)}(\nu/2, 1/2)`.
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    level: float
    t: float
    p_value: float

    @property
    def resolved(self) -> bool:
        """Whether the confidence interval excludes 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-ready dict (infinite ``t`` as a string)."""
        out = dict(self.__dict__)
        out["t"] = self.t if math.isfinite(self.t) else str(self.t)
        return out


def paired_difference(a: Any, b: Any, level: float = 0.95) -> PairedDifference:
    r"""Paired Student-:math:`t` analysis of :math:`d_i = a_i - b_i` ([1]):

    .. math::
        \bar d = \frac1k \sum_i d_i, \qquad s_d^2 = \frac{1}{k-1} \sum_i (d_i - \bar d)^2, \qquad
        \bar d \pm t_{(1+\ell)/2,\,k-1}\, \frac{s_d}{\sqrt k}.

    :param a: the first method's values on the :math:`k` splits, shape ``(k,)``.
    :param b: the second method's values on the same splits, shape ``(k,)``.
    :param level: confidence level :math:`\ell \in (0, 1)`.
    :returns: a :class:`PairedDifference` (of ``a - b``).
    :raises TypeError: if ``a`` or ``b`` is not a sequence of numbers, or ``level`` not a number.
    :raises ValueError: if their lengths differ, there are fewer than 2 pairs, an entry is not finite, or ``level``
        is outside :math:`(0, 1)`.
    """
    xs, ys = _as_floats("a", a), _as_floats("b", b)
    level = check_fraction("level", level)
    if len(xs) != len(ys):
        raise ValueError(f"a and b must have the same length (paired splits), got {len(xs)} and {len(ys)}")
    k = check_int("len(a)", len(xs), 2)
    d = [x - y for x, y in zip(xs, ys)]
    mean = math.fsum(d) / k
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in d) / (k - 1))
    half = t_quantile(0.5 + level / 2.0, k - 1) * sd / math.sqrt(k)
    if sd > 0:
        t = mean / (sd / math.sqrt(k))
        p = _betainc((k - 1) / 2.0, 0.5, (k - 1) / (k - 1 + t * t))
    else:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    return PairedDifference(k, mean, sd, mean - half, mean + half, level, t, p)


# -- McNemar ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class McNemar:
    r"""McNemar's test of two classifiers on the same examples.

    :ivar b: examples method A gets right and B wrong.
    :ivar c: examples A gets wrong and B right.
    :ivar statistic: :math:`\min(b, c)` for the exact test; :math:`(|b-c|-1)^2/(b+c)` (or :math:`(b-c)^2/(b+c)`
        without correction) for the :math:`\chi^2` test; 0 when :math:`b + c = 0`.
    :ivar p_value: two-sided p-value of :math:`H_0`: both disagreements equally likely.
    :ivar exact: whether the exact binomial test was used.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    exact: bool

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dict(self.__dict__)


def _binomial_two_sided(b: int, c: int) -> float:
    n, m = b + c, min(b, c)
    tail = math.fsum(math.comb(n, i) for i in range(m + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mcnemar(correct_a: Any, correct_b: Any, exact: Optional[bool] = None, correction: bool = True) -> McNemar:
    r"""McNemar's test ([2], [4]) for the accuracy difference of two classifiers scored on the same examples.

    With :math:`b` = #(A right, B wrong) and :math:`c` = #(A wrong, B right), under :math:`H_0` the :math:`n = b + c`
    discordant examples split as :math:`b \sim \mathrm{Bin}(n, 1/2)`:

    .. math::
        p_{\text{exact}} = \min\Big(1,\; 2 \sum_{i=0}^{\min(b,c)} \binom{n}{i} 2^{-n}\Big), \qquad
        p_{\chi^2} = P\big(\chi^2_1 > s\big) = \operatorname{erfc}\sqrt{s/2}, \quad
        s = \frac{(|b - c| - 1)^2}{b + c}.

    :param correct_a: per-example correctness of method A, bools of shape ``(N,)``.
    :param correct_b: the same for method B on the same examples.
    :param exact: exact binomial test (``True``), :math:`\chi^2` (``False``) or ``None``: exact when
        :math:`b + c <` :data:`EXACT_BELOW`.
    :param correction: continuity correction of the :math:`\chi^2` statistic (Edwards').
    :returns: a :class:`McNemar`. When :math:`b + c = 0` the statistic is 0 and the p-value 1.
    :raises TypeError: if an entry is not a ``bool``, or ``exact``/``correction`` have the wrong type.
    :raises ValueError: if the two have different lengths.
    """
    xs, ys = _as_bools("correct_a", correct_a), _as_bools("correct_b", correct_b)
    if exact is not None:
        check_bool("exact", exact)
    check_bool("correction", correction)
    if len(xs) != len(ys):
        raise ValueError(f"correct_a and correct_b must have the same length, got {len(xs)} and {len(ys)}")
    b = sum(1 for x, y in zip(xs, ys) if x and not y)
    c = sum(1 for x, y in zip(xs, ys) if y and not x)
    return mcnemar_counts(b, c, exact, correction)


def mcnemar_counts(b: int, c: int, exact: Optional[bool] = None, correction: bool = True) -> McNemar:
    """:func:`mcnemar` from the discordant counts ``b`` and ``c`` (e.g. summed over splits)."""
    b, c = check_int("b", b, 0), check_int("c", c, 0)
    use_exact = (b + c < EXACT_BELOW) if exact is None else check_bool("exact", exact)
    if b + c == 0:
        return McNemar(b, c, 0.0, 1.0, use_exact)
    if use_exact:
        return McNemar(b, c, float(min(b, c)), _binomial_two_sided(b, c), True)
    diff = abs(b - c) - (1.0 if check_bool("correction", correction) else 0.0)
    s = max(diff, 0.0) ** 2 / (b + c)
    return McNemar(b, c, s, math.erfc(math.sqrt(s / 2.0)), False)


# -- summaries over methods and splits ------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSummary:
    """One method over the splits: mean and sd of each metric, and its comparison with the reference.

    :ivar name: the method.
    :ivar n: number of splits.
    :ivar mean: metric -> mean over the splits.
    :ivar sd: metric -> sample standard deviation over the splits (0 for one split).
    :ivar difference: metric -> :class:`PairedDifference` of this method minus the reference (empty for the
        reference itself, or with fewer than 2 splits).
    :ivar mcnemar: McNemar's test against the reference on the per-example correctness, discordant counts summed
        over the splits (``None`` for the reference or without correctness).
    """

    name: str
    n: int
    mean: Dict[str, float]
    sd: Dict[str, float]
    difference: Dict[str, PairedDifference] = field(default_factory=dict)
    mcnemar: Optional[McNemar] = None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name, "n": self.n, "mean": dict(self.mean), "sd": dict(self.sd),
            "difference": {k: v.to_dict() for k, v in self.difference.items()},
            "mcnemar": None if self.mcnemar is None else self.mcnemar.to_dict(),
        }  # fmt: skip


#: How :meth:`Comparison.to_markdown` shows a metric: (column label, factor, decimals).
_DISPLAY = {"accuracy": ("accuracy %", 100.0, 2), "compression": ("compression ×", 1.0, 1)}
_DEFAULT_DISPLAY = (None, 1.0, 4)


def _display(metric: str) -> Tuple[str, float, int]:
    label, factor, digits = _DISPLAY.get(metric, _DEFAULT_DISPLAY)
    return (label or metric), factor, digits


@dataclass(frozen=True)
class Comparison:
    """Every method summarized against one reference (:func:`summarize`).

    :ivar reference: the reference method.
    :ivar level: the confidence level of the intervals.
    :ivar metrics: the metrics summarized, in order.
    :ivar methods: one :class:`MethodSummary` per method, in the input's order.
    """

    reference: str
    level: float
    metrics: Tuple[str, ...]
    methods: Tuple[MethodSummary, ...]

    def __getitem__(self, name: str) -> MethodSummary:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict."""
        return {"reference": self.reference, "level": self.level, "metrics": list(self.metrics),
                "methods": [m.to_dict() for m in self.methods]}  # fmt: skip

    def to_markdown(self, differences: Optional[Sequence[str]] = None) -> str:
        """A markdown table: one row per method, ``mean ± sd`` per metric, then for each metric of ``differences``
        (default: those with a paired difference, accuracy first) ``Δ [low, high]`` of method minus reference,
        and McNemar's discordant counts and p-value when per-example correctness was given. Accuracy is shown in
        percent (differences in percentage points)."""
        diffs = [m for m in self.metrics if any(m in s.difference for s in self.methods)]
        diffs = list(differences) if differences is not None else diffs
        has_mc = any(s.mcnemar is not None for s in self.methods)
        pct = f"{round(100 * self.level)} %"
        head = [_display(m)[0] for m in self.metrics]
        head += [f"Δ {_display(m)[0]} vs {self.reference} ({pct} CI)" for m in diffs]
        head += ["McNemar b / c, p"] if has_mc else []
        lines = ["| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
        for s in self.methods:
            cells = []
            for m in self.metrics:
                _, f, dg = _display(m)
                cells.append(f"{s.mean[m] * f:.{dg}f} ± {s.sd[m] * f:.{dg}f}")
            for m in diffs:
                _, f, dg = _display(m)
                d = s.difference.get(m)
                cells.append("—" if d is None else f"{d.mean * f:+.{dg}f} [{d.low * f:+.{dg}f}, {d.high * f:+.{dg}f}]")
            if has_mc:
                mc = s.mcnemar
                cells.append("—" if mc is None else f"{mc.b} / {mc.c}, p={mc.p_value:.2g}")
            lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _check_results(results: Any, reference: str) -> Tuple[int, List[str]]:
    if not isinstance(results, Mapping) or not results:
        raise TypeError(f"results must be a non-empty mapping method -> list of per-split records, got {results!r:.80}")
    if reference not in results:
        raise ValueError(f"reference {reference!r} is not a method of results ({', '.join(map(str, results))})")
    ks = {name: len(_as_list(f"results[{name!r}]", splits)) for name, splits in results.items()}
    if len(set(ks.values())) != 1 or min(ks.values()) < 1:
        raise ValueError(f"every method of results must have the same number (>= 1) of splits, got {ks}")
    for name, splits in results.items():
        for i, rec in enumerate(splits):
            if not isinstance(rec, Mapping):
                raise TypeError(f"results[{name!r}][{i}] must be a mapping metric -> value, got {type(rec).__name__}")
    return ks[reference], list(results)


def _metric_values(results: Mapping[str, Sequence[Mapping[str, Any]]], name: str, metric: str) -> List[float]:
    out = []
    for i, rec in enumerate(results[name]):
        if metric not in rec:
            raise ValueError(f"results[{name!r}][{i}] has no metric {metric!r}")
        out.append(check_real(f"results[{name!r}][{i}][{metric!r}]", rec[metric]))
    return out


def _pooled_mcnemar(results: Mapping[str, Sequence[Mapping[str, Any]]], name: str, reference: str, key: str):
    if not all(key in rec for rec in results[name]) or not all(key in rec for rec in results[reference]):
        return None
    b = c = 0
    for i, (ra, rb) in enumerate(zip(results[name], results[reference])):
        one = mcnemar(_as_bools(f"results[{name!r}][{i}][{key!r}]", ra[key]),
                      _as_bools(f"results[{reference!r}][{i}][{key!r}]", rb[key]))  # fmt: skip
        b, c = b + one.b, c + one.c
    return mcnemar_counts(b, c)


def summarize(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    reference: str,
    metrics: Optional[Sequence[str]] = None,
    level: float = 0.95,
    correct_key: str = "correct",
) -> Comparison:
    r"""Summarize methods run on the same :math:`k` splits against a reference method.

    For every method and metric: the mean and sample sd over the splits; for every method but the reference and
    :math:`k \ge 2`: the :func:`paired_difference` (method minus reference) with its ``level`` CI; and, when every
    record of both carries per-example correctness under ``correct_key``, McNemar's test (:func:`mcnemar_counts`)
    on the discordant counts summed over the splits. (Pooling treats the :math:`k` test sets as one set of
    :math:`\sum_i N_i` paired examples; test sets of resampled splits share examples, so the pooled p-value is
    optimistic; the paired CI over splits is the primary measure.)

    :param results: method -> one record per split (same split order for every method); a record maps metric
        names to numbers, and optionally ``correct_key`` to per-example bools.
    :param reference: the method the others are compared with.
    :param metrics: metrics to summarize; default: the numeric keys of the reference's first record.
    :param level: confidence level of the intervals.
    :param correct_key: the record key holding per-example correctness.
    :returns: a :class:`Comparison`.
    :raises TypeError: on malformed ``results``.
    :raises ValueError: if ``reference`` is missing, methods have different numbers of splits, or a metric is
        missing or not finite.
    """
    k, names = _check_results(results, reference)
    level = check_fraction("level", level)
    if metrics is None:
        first = results[reference][0]
        metrics = [
            m for m, v in first.items() if m != correct_key and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    metrics = tuple(_as_list("metrics", metrics))
    out = []
    for name in names:
        vals = {m: _metric_values(results, name, m) for m in metrics}
        mean = {m: math.fsum(v) / k for m, v in vals.items()}
        sd = {m: math.sqrt(math.fsum((x - mean[m]) ** 2 for x in v) / (k - 1)) if k > 1 else 0.0
              for m, v in vals.items()}  # fmt: skip
        diff, mc = {}, None
        if name != reference:
            if k >= 2:
                diff = {m: paired_difference(v, _metric_values(results, reference, m), level) for m, v in vals.items()}
            mc = _pooled_mcnemar(results, name, reference, correct_key)
        out.append(MethodSummary(name, k, mean, sd, diff, mc))
    return Comparison(reference, level, metrics, tuple(out))
