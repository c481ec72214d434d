"""How a score counts in the pre-aggregated ``score_rollup`` (pure).

A live score contributes to one unfiltered row per hour (numeric ones without their value key), and per day to
one unfiltered row and one row per dimension value of its trace (trace name, environment, release, user, each
tag), keyed by a value key: the category label for categorical and boolean scores, a histogram cell for numeric
ones (see ``value_key_numeric``; queries re-bin the cells). Contributions only ever add and
subtract, so the table is independent of the order in which scores and traces arrive.

A row is keyed by two 64-bit ids hashed from its text columns (``row_ids``), not by the columns themselves: an
11-column text key made every upsert compare and index ~100 bytes of text (18-25 µs of PostgreSQL CPU a row, the
largest cost of applying scores).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any

GRANULARITIES = ("hour", "day")
DIM_KINDS = ("trace_name", "environment", "release", "user", "tag")

RollupKey = tuple[str, str, str, str, str, datetime, str, str, str, str]
# n, n_value, sum, sum_sq
Measures = list[Any]
_ZERO = Decimal(0)
_CACHE_MAX = 100_000


def key_id(*parts: str) -> int:
    """A signed 64-bit id of ``parts``: the first 8 bytes (big-endian) of the MD5 of their UTF-8 joined by NUL,
    which no text column can hold, so distinct parts never join to the same bytes. Migration 0012 computes the
    same in SQL. Not a security hash: ids of distinct rows of one dimension and bucket collide with probability
    ~n²/2⁶⁵, and reads still compare the text columns."""
    digest = hashlib.md5("\0".join(parts).encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def dims_id(project_id: str, granularity: str, dim_kind: str, dim_value: str) -> int:
    """The id of one filter value's rows at one granularity (what a dashboard read scans, by bucket)."""
    return key_id(project_id, granularity, dim_kind, dim_value)


# (project, granularity, dim kind, dim value, name, source, config, data type, value key): a key without its bucket
_SERIES_OF = itemgetter(0, 1, 2, 3, 4, 6, 7, 8, 9)
_IDS: dict[tuple[str, ...], tuple[int, int]] = {}


def row_ids(key: RollupKey) -> tuple[int, int]:
    """(dims id, series id) of a rollup key: the key of its row is (dims id, bucket, series id, shard). Cached per
    series (a series has rows in many buckets and batches)."""
    series = _SERIES_OF(key)
    got = _IDS.get(series)
    if got is None:
        if len(_IDS) >= _CACHE_MAX:
            _IDS.clear()
        got = _IDS[series] = (dims_id(*series[:4]), key_id(*series))
    return got


def value_key_numeric(value: float) -> str:
    """The histogram cell of a numeric value: a 0.05 grid below 1 in magnitude (judge scores in [0, 1]: 20 cells,
    each named by its lower edge), two significant digits above (1-5 and 0-10 scales stay exact)."""
    if abs(value) < 1:
        return repr(math.floor(value * 20) / 20)
    return repr(float(f"{value:.2g}"))


def truncate(ts: datetime, granularity: str) -> datetime:
    """Start of the UTC hour or day (a timestamp sent with another offset lands in the same bucket as its UTC
    equivalent; naive timestamps are taken as UTC)."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if granularity == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_starts(start: datetime, end: datetime, granularity: str) -> list[datetime]:
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    out, cur = [], truncate(start, granularity)
    while cur <= end:
        out.append(cur)
        cur += step
    return out


def trace_dims(trace: Mapping[str, Any] | None, score_environment: str | None) -> dict[str, Any]:
    """The filter dimensions a score is counted under: its trace's attributes (environment falls back to the
    score's own)."""
    t = trace or {}
    tags = t.get("tags")
    return {
        "trace_name": t.get("name"),
        "environment": t.get("environment") or score_environment,
        "release": t.get("release"),
        "user": t.get("user_id"),
        "tag": sorted({str(x) for x in tags}) if isinstance(tags, list) else [],
    }


def _dim_pairs(dims: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = [("", "")]
    for kind in DIM_KINDS:
        v = dims.get(kind)
        if kind == "tag":
            pairs.extend(("tag", str(t)) for t in (v or []))
        elif v is not None and v != "":
            pairs.append((kind, str(v)))
    return pairs


def value_keys(score: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """(value key, numeric value) pairs one score contributes; empty for text scores."""
    dt = score["data_type"]
    value = score.get("value")
    if dt == "NUMERIC":
        return [] if value is None else [(value_key_numeric(value), value)]
    if dt == "BOOLEAN":
        label = score.get("string_value")
        if label is None and value is not None:
            label = "True" if value >= 0.5 else "False"
        return [] if label is None else [(label, value)]
    if dt == "CATEGORICAL":
        labels = score.get("string_values")
        if labels:
            return [(str(lab), None) for lab in labels]
        label = score.get("string_value")
        if label is None and value is not None:
            label = repr(value)
        return [] if label is None else [(label, value)]
    return []


def contributions(
    project_id: str, score: Mapping[str, Any], dims: Mapping[str, Any]
) -> list[tuple[RollupKey, float | None]]:
    if score.get("deleted"):
        return []
    vks = value_keys(score)
    if not vks:
        return []
    ts: datetime = score["timestamp"]
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    hour = ts.replace(minute=0, second=0, microsecond=0)  # truncate(ts, "hour"), once for both buckets
    day = hour.replace(hour=0)
    name, source, config, dt = score["name"], score["source"], score.get("config_id") or "", score["data_type"]
    # hourly rows only unfiltered: they are the costly ones (24x the day rows) and dashboards filter by day.
    # Numeric hourly rows keep count and sums only: a histogram comes from the day rows, and one row per hour
    # instead of one per value keeps hourly charts cheap to read.
    out: list[tuple[RollupKey, float | None]] = [
        ((project_id, "hour", "", "", name, hour, source, config, dt, vk), val)
        for vk, val in ([("", v) for _, v in vks] if dt == "NUMERIC" else vks)
    ]
    out.extend(((project_id, "day", kind, dim_value, name, day, source, config, dt, vk), val)
               for kind, dim_value in _dim_pairs(dims) for vk, val in vks)
    return out


def dim_pairs(dims: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (dimension kind, value) day rows a score with these dimensions counts under, the unfiltered one first
    (for ``accumulate``; compute once for the scores that share their dimensions)."""
    return _dim_pairs(dims)


# Buckets by UTC hour number: one shared (hour, day) pair of datetimes per hour, so a batch does not build (and
# hash) two datetimes per score. Values by float: their Decimal, square and negations, computed once.
_BUCKETS: dict[int, tuple[datetime, datetime]] = {}
_DECIMALS: dict[float, tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]] = {}


def _buckets(ts: datetime) -> tuple[datetime, datetime]:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    n = int(ts.timestamp() // 3600)
    got = _BUCKETS.get(n)
    if got is None:
        utc = ts.astimezone(UTC)
        hour = utc.replace(minute=0, second=0, microsecond=0)
        got = (hour, hour.replace(hour=0))
        if hour.timestamp() // 3600 == n:  # (never otherwise; cached only when the two agree)
            if len(_BUCKETS) >= _CACHE_MAX:
                _BUCKETS.clear()
            _BUCKETS[n] = got
    return got


def _decimals(val: float) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]:
    """(d, d², -d, -d², and each of those added to zero) for ``Decimal(repr(float(val)))``."""
    f = float(val)
    got = _DECIMALS.get(f)
    if got is None:
        d = Decimal(repr(f))
        sq = d * d
        got = (d, sq, -d, -sq, _ZERO + d, _ZERO + sq, _ZERO + -d, _ZERO + -sq)
        # zero is left out: 0.0 and -0.0 are one key but two Decimals
        if f == f and f != 0:
            if len(_DECIMALS) >= _CACHE_MAX:
                _DECIMALS.clear()
            _DECIMALS[f] = got
    return got


def accumulate_moved(deltas: dict[RollupKey, Measures], project_id: str, score: Mapping[str, Any],
                     old_pairs: list[tuple[str, str]], new_pairs: list[tuple[str, str]]) -> None:
    """A score moving from the day rows of ``old_pairs`` to those of ``new_pairs`` (its trace's dimensions
    changed): what ``accumulate`` with -1 under the old and +1 under the new gives, without the rows the two have
    in common (the hourly one, the unfiltered day row, unchanged dimensions), where the two cancel out."""
    old_set, new_set = set(old_pairs), set(new_pairs)
    if len(old_set) != len(old_pairs) or len(new_set) != len(new_pairs):  # a pair twice: no shortcut
        accumulate(deltas, project_id, score, old_pairs, -1)
        accumulate(deltas, project_id, score, new_pairs, +1)
        return
    gone = [p for p in old_pairs if p not in new_set]
    came = [p for p in new_pairs if p not in old_set]
    if gone:
        accumulate(deltas, project_id, score, gone, -1, hourly=False)
    if came:
        accumulate(deltas, project_id, score, came, +1, hourly=False)


def accumulate(deltas: dict[RollupKey, Measures], project_id: str, score: Mapping[str, Any],
               pairs: list[tuple[str, str]], sign: int, *, hourly: bool = True) -> None:
    """``add_to(deltas, contributions(project_id, score, dims), sign)`` with ``pairs = dim_pairs(dims)``, without
    the intermediate list: the same keys and the same arithmetic (a key seen for the first time starts from zero
    as in ``add_to``), so the same deltas. ``hourly=False``: the day rows of ``pairs`` only."""
    if score.get("deleted"):
        return
    vks = value_keys(score)
    if not vks:
        return
    hour, day = _buckets(score["timestamp"])
    name, source, config, dt = score["name"], score["source"], score.get("config_id") or "", score["data_type"]
    numeric = dt == "NUMERIC"
    get = deltas.get
    for vk, val in vks:
        keys = [(project_id, "day", kind, dv, name, day, source, config, dt, vk) for kind, dv in pairs]
        if hourly:
            keys.append((project_id, "hour", "", "", name, hour, source, config, dt, "" if numeric else vk))
        if val is None:
            for key in keys:
                m = get(key)
                if m is None:
                    deltas[key] = [sign, 0, _ZERO, _ZERO]
                else:
                    m[0] += sign
            continue
        dec = _decimals(val)
        s, sq, s0, sq0 = (dec[0], dec[1], dec[4], dec[5]) if sign > 0 else (dec[2], dec[3], dec[6], dec[7])
        for key in keys:
            m = get(key)
            if m is None:
                deltas[key] = [sign, sign, s0, sq0]
            else:
                m[0] += sign
                m[1] += sign
                m[2] += s
                m[3] += sq


def add_to(deltas: dict[RollupKey, Measures], contribs: Iterable[tuple[RollupKey, float | None]], sign: int) -> None:
    # One score's contributions share its value: its Decimal (and square) is computed once.
    dec: dict[float, tuple[Decimal, Decimal]] = {}
    for key, val in contribs:
        m = deltas.get(key)
        if m is None:
            m = deltas[key] = [0, 0, _ZERO, _ZERO]
        m[0] += sign
        if val is not None:
            pair = dec.get(val)
            if pair is None:
                d = Decimal(repr(float(val)))
                pair = dec[val] = (d, d * d) if sign > 0 else (-d, -(d * d))
            m[1] += sign
            m[2] += pair[0]
            m[3] += pair[1]
