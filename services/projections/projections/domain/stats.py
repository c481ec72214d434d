"""Statistics over scores (pure): confidence intervals, agreement between reviewers, judge calibration.

Krippendorff's alpha comes from the ``krippendorff`` package, Spearman's rho and the t and Wilson intervals from
SciPy; Cohen's kappa is computed here (a confusion matrix and two sums).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

# scipy and krippendorff are imported where used: together they are most of the service's start
# time, and a restarted service should answer HTTP in a second or two, not after loading statistics libraries.

LEVELS = ("nominal", "ordinal", "interval", "ratio")


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def mean_ci(n: int, total: float, total_sq: float, confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and a t-interval for the mean, from count, sum and sum of squares."""
    from scipy import stats as sps
    if n <= 0:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    mean = total / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    std = math.sqrt(var)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    from scipy import stats as sps
    if n <= 0:
        return None, None
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def proportion_ci(successes: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(successes, n)
    return {"n": n, "count": successes, "rate": successes / n if n else None, "ci_low": low, "ci_high": high}


def cohen_kappa(a: Sequence[Any], b: Sequence[Any], weights: str | None = None,
                labels: Sequence[Any] | None = None) -> float | None:
    """Cohen's kappa of two raters over the same items; None where it is undefined (no variation at all).

    ``weights``: None, "linear" or "quadratic" disagreement weights over the classes in order: ``labels`` if
    given (pairs with a value outside them are left out), else the sorted values. The computation is
    scikit-learn's ``cohen_kappa_score``: 1 - sum(W * observed) / sum(W * expected by the marginals)."""
    if len(a) != len(b) or len(a) == 0:
        return None
    if len(set(a) | set(b)) < 2:
        return None
    classes = list(labels) if labels else sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(classes)}
    n = len(classes)
    confusion = np.zeros((n, n), dtype=np.float64)
    for x, y in zip(a, b, strict=True):
        i, j = index.get(x), index.get(y)
        if i is not None and j is not None:
            confusion[i, j] += 1
    sum0 = confusion.sum(axis=0)
    sum1 = confusion.sum(axis=1)
    total = sum0.sum()
    if total == 0:
        return None
    expected = np.outer(sum0, sum1) / total
    if weights is None:
        w = np.ones((n, n), dtype=np.float64)
        np.fill_diagonal(w, 0)
    else:
        w = np.zeros((n, n), dtype=np.float64) + np.arange(n)
        w = np.abs(w - w.T) if weights == "linear" else (w - w.T) ** 2
    disagreement_expected = float(np.sum(w * expected))
    if disagreement_expected == 0:
        return None
    return _finite(1 - float(np.sum(w * confusion)) / disagreement_expected)


def default_level(data_type: str) -> str:
    return "interval" if data_type == "NUMERIC" else "nominal"


def kappa_weights(level: str) -> str | None:
    return {"nominal": None, "ordinal": "linear"}.get(level, "quadratic")


@dataclass
class AgreementResult:
    level: str
    alpha: float | None
    n_units: int
    n_pairable_units: int
    n_coders: int
    n_ratings: int
    percent_agreement: float | None
    pairs: list[dict[str, Any]]
    disputed: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _encode(values: Sequence[Any], level: str, domain: Sequence[Any] | None) -> tuple[dict[Any, float], list[Any]]:
    """Map rated values to numbers for the alpha computation: nominal labels to their index, everything else to
    its numeric value."""
    distinct = list(dict.fromkeys(values))
    if level == "nominal" or not all(isinstance(v, int | float) for v in distinct):
        ordered = list(domain) if domain else sorted(distinct, key=lambda v: (str(type(v)), v))
        ordered += [v for v in distinct if v not in ordered]
        return {v: float(i) for i, v in enumerate(ordered)}, ordered
    return {v: float(v) for v in distinct}, sorted(distinct)


def agreement(
    ratings: Mapping[Hashable, Mapping[str, Any]],
    level: str,
    *,
    value_domain: Sequence[Any] | None = None,
    top_disputed: int = 10,
) -> AgreementResult:
    """Agreement of reviewers. ``ratings``: unit -> {reviewer: value} (one value per reviewer and unit)."""
    import krippendorff
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    units = list(ratings)
    coders = sorted({c for r in ratings.values() for c in r})
    all_values = [v for r in ratings.values() for v in r.values()]
    codes, domain = _encode(all_values, level, value_domain)
    pairable = [u for u in units if len(ratings[u]) >= 2]

    alpha: float | None = None
    if pairable and len(set(all_values)) >= 2:
        matrix = np.full((len(coders), len(pairable)), np.nan)
        cidx = {c: i for i, c in enumerate(coders)}
        for j, u in enumerate(pairable):
            for c, v in ratings[u].items():
                matrix[cidx[c], j] = codes[v]
        domain_codes = [codes[v] for v in domain] if level in ("ordinal", "nominal") else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                alpha = _finite(krippendorff.alpha(
                    reliability_data=matrix, level_of_measurement=level,  # type: ignore[arg-type]
                    value_domain=domain_codes,
                ))
            except ValueError:
                alpha = None
    elif pairable:
        alpha = None  # every rating identical: alpha is undefined (0/0), percent agreement says 100%

    agree_pairs = total_pairs = 0
    disputed: list[dict[str, Any]] = []
    for u in pairable:
        vals = list(ratings[u].values())
        pairs = list(combinations(vals, 2))
        total_pairs += len(pairs)
        agree_pairs += sum(1 for x, y in pairs if x == y)
        if level == "nominal" or not all(isinstance(v, int | float) for v in vals):
            counts = Counter(vals)
            spread = 1.0 - counts.most_common(1)[0][1] / len(vals)
        else:
            spread = float(np.std([float(v) for v in vals]))
        disputed.append({"unit": u, "ratings": dict(ratings[u]), "disagreement": spread})
    disputed.sort(key=lambda d: (-d["disagreement"], str(d["unit"])))
    disputed = [d for d in disputed if d["disagreement"] > 0][:top_disputed]

    weights = kappa_weights(level)
    pair_rows: list[dict[str, Any]] = []
    for a, b in combinations(coders, 2):
        common = [u for u in pairable if a in ratings[u] and b in ratings[u]]
        if not common:
            continue
        xa = [ratings[u][a] for u in common]
        xb = [ratings[u][b] for u in common]
        if weights is None:
            k = cohen_kappa([codes[v] for v in xa], [codes[v] for v in xb])
        else:
            k = _weighted_kappa(xa, xb, codes, weights)
        pair_rows.append({
            "reviewer_a": a, "reviewer_b": b, "n": len(common), "kappa": k, "weights": weights,
            "percent_agreement": sum(1 for x, y in zip(xa, xb, strict=True) if x == y) / len(common),
        })

    return AgreementResult(
        level=level, alpha=alpha, n_units=len(units), n_pairable_units=len(pairable), n_coders=len(coders),
        n_ratings=len(all_values), percent_agreement=(agree_pairs / total_pairs) if total_pairs else None,
        pairs=pair_rows, disputed=disputed,
    )


def _weighted_kappa(xa: Sequence[Any], xb: Sequence[Any], codes: Mapping[Any, float], weights: str) -> float | None:
    """Weighted kappa needs ordered integer categories: rank the distinct numeric codes."""
    ranks = {c: i for i, c in enumerate(sorted({codes[v] for v in list(xa) + list(xb)}))}
    return cohen_kappa([ranks[codes[v]] for v in xa], [ranks[codes[v]] for v in xb], weights=weights)


def _is_integral(values: Sequence[float]) -> bool:
    return all(float(v).is_integer() for v in values)


def calibration(
    pairs: Sequence[tuple[Any, Any]],
    *,
    data_type: str,
    label_values: Mapping[str, float] | None = None,
    bins: int = 5,
) -> dict[str, Any]:
    """Agreement of an automated judge with human labels on the same objects. ``pairs``: (human, automated),
    labels (str) for categorical/boolean scores, numbers for numeric ones."""
    from scipy import stats as sps
    n = len(pairs)
    out: dict[str, Any] = {"n": n, "kappa": None, "kappa_weights": None, "spearman": None, "mae": None,
                           "exact_agreement": None, "confusion": None}
    if n == 0:
        return out
    h = [p[0] for p in pairs]
    a = [p[1] for p in pairs]
    out["exact_agreement"] = sum(1 for x, y in zip(h, a, strict=True) if x == y) / n
    numeric = data_type == "NUMERIC"
    if numeric:
        hv = [float(x) for x in h]
        av = [float(x) for x in a]
    elif label_values:
        hv = [label_values.get(str(x), math.nan) for x in h]
        av = [label_values.get(str(x), math.nan) for x in a]
    else:
        hv = av = []
    if hv and not any(math.isnan(x) for x in hv + av):
        out["mae"] = float(np.mean(np.abs(np.array(hv) - np.array(av))))
        if n >= 3 and len(set(hv)) > 1 and len(set(av)) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out["spearman"] = _finite(sps.spearmanr(hv, av).statistic)
    if not numeric:
        labels = sorted({str(x) for x in h + a}, key=lambda s: (label_values or {}).get(s, 0.0))
        out["kappa"] = cohen_kappa([str(x) for x in h], [str(x) for x in a], labels=labels)
        out["confusion"] = _confusion([str(x) for x in h], [str(x) for x in a], labels)
        if label_values and len(labels) > 2:
            ranks = {lab: i for i, lab in enumerate(labels)}
            out["kappa_weighted"] = cohen_kappa([ranks[str(x)] for x in h], [ranks[str(x)] for x in a],
                                                weights="quadratic")
        return out
    if _is_integral(hv + av) and len(set(hv + av)) <= 20:
        labels_n = sorted(set(hv + av))
        out["kappa"] = cohen_kappa([int(x) for x in hv], [int(x) for x in av], weights="quadratic")
        out["kappa_weights"] = "quadratic"
        out["confusion"] = _confusion([repr(x) for x in hv], [repr(x) for x in av], [repr(x) for x in labels_n])
    else:
        lo, hi = min(hv + av), max(hv + av)
        width = (hi - lo) / bins or 1.0

        def b(x: float) -> str:
            i = min(bins - 1, int((x - lo) / width))
            return f"[{lo + i * width:.3g}, {lo + (i + 1) * width:.3g})"

        edges = [b(lo + (i + 0.5) * width) for i in range(bins)]
        out["confusion"] = _confusion([b(x) for x in hv], [b(x) for x in av], edges)
    return out


def _confusion(h: Sequence[str], a: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    idx = {lab: i for i, lab in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for x, y in zip(h, a, strict=True):
        m[idx[x]][idx[y]] += 1
    return {"labels": list(labels), "rows": "human", "columns": "automated", "matrix": m}
