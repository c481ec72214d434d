"""The statistics against published worked examples, and the pure merge/rollup rules."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from projections.domain.merge import field_bits, merge_fields, pack_field_ts, unpack_field_ts
from projections.domain.rollup import add_to, contributions, trace_dims
from projections.domain.stats import agreement, calibration, cohen_kappa, mean_ci, wilson_interval

from .conftest import at

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units, values
# 1-5, missing data. Published: nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
KRIPP = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def kripp_ratings() -> dict[int, dict[str, int]]:
    units: dict[int, dict[str, int]] = {}
    for coder, row in KRIPP.items():
        for u, v in enumerate(row):
            if v is not None:
                units.setdefault(u, {})[coder] = v
    return units


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849),
                                                  ("ratio", 0.797)])
def test_krippendorff_alpha_matches_the_published_example(level: str, published: float) -> None:
    res = agreement(kripp_ratings(), level)
    assert res.alpha is not None and round(res.alpha, 3) == published
    # unit 12 has a single value: not pairable, so 11 units count
    assert (res.n_units, res.n_pairable_units, res.n_coders, res.n_ratings) == (12, 11, 4, 41)


def test_cohen_kappa_textbook_example() -> None:
    # Two readers, 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    k = cohen_kappa(a, b)
    assert k is not None and math.isclose(k, 0.4)
    # through agreement(): the pair's kappa and percent agreement
    ratings = {i: {"r1": x, "r2": y} for i, (x, y) in enumerate(zip(a, b, strict=True))}
    res = agreement(ratings, "nominal")
    (pair,) = res.pairs
    assert math.isclose(pair["kappa"], 0.4) and math.isclose(pair["percent_agreement"], 0.7)
    assert math.isclose(res.percent_agreement or 0, 0.7)


def test_disputed_items_and_degenerate_cases() -> None:
    res = agreement({"u1": {"a": "x", "b": "x"}, "u2": {"a": "x", "b": "y", "c": "y"}, "u3": {"a": "z"}},
                    "nominal")
    assert [d["unit"] for d in res.disputed] == ["u2"]
    assert res.n_pairable_units == 2
    same = agreement({"u1": {"a": 1, "b": 1}, "u2": {"a": 1, "b": 1}}, "interval")
    assert same.alpha is None and same.percent_agreement == 1.0  # no variation: alpha undefined
    with pytest.raises(ValueError, match="level"):
        agreement({}, "fuzzy")


def test_intervals() -> None:
    # 1, 2, 3, 4, 5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776 -> half-width 1.963
    ci = mean_ci(5, 15.0, 55.0)
    assert ci["mean"] == 3 and math.isclose(ci["ci_high"] - 3, 2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel_tol=1e-6)
    # Wilson, 8 of 10: (0.4902, 0.9433) (Newcombe 1998 style figures)
    low, high = wilson_interval(8, 10)
    assert low is not None and high is not None
    assert round(low, 4) == 0.4902 and round(high, 4) == 0.9433
    assert wilson_interval(0, 0) == (None, None)


def test_calibration_metrics() -> None:
    pairs = [("good", "good"), ("good", "bad"), ("bad", "bad"), ("bad", "bad"), ("good", "good")]
    r = calibration(pairs, data_type="CATEGORICAL", label_values={"bad": 0, "good": 1})
    assert r["exact_agreement"] == 0.8 and r["confusion"]["labels"] == ["bad", "good"]
    assert r["confusion"]["matrix"] == [[2, 0], [1, 2]]
    assert math.isclose(r["mae"], 0.2)
    num = calibration([(1, 1), (2, 3), (3, 3), (4, 5), (5, 5)], data_type="NUMERIC")
    assert math.isclose(num["mae"], 0.4) and num["kappa_weights"] == "quadratic"
    assert num["spearman"] is not None and num["spearman"] > 0.9


def test_per_field_last_write_wins() -> None:
    row: dict[str, object] = {}
    ts: dict[str, int] = {}
    merge_fields(row, ts, {"name": "new", "user": "u"}, 20)
    merge_fields(row, ts, {"name": "old", "input": 1}, 10)
    assert row == {"name": "new", "user": "u", "input": 1}


def test_field_ts_packs_by_timestamp_and_unpacks_either_form() -> None:
    from projections.adapters.statements import OBS_FIELDS, TRACE_FIELDS

    bits = field_bits(TRACE_FIELDS)
    ft = {"name": 20, "input": 10, "tags": 20, "dataset_id": 30}
    packed = pack_field_ts(ft, bits)
    assert packed == [20, bits["name"] | bits["tags"], 10, bits["input"], 30, bits["dataset_id"]]
    assert unpack_field_ts(packed, TRACE_FIELDS) == ft
    assert unpack_field_ts(ft, TRACE_FIELDS) == ft  # rows written before the packed form
    assert pack_field_ts({**ft, "gone": 40}, bits) == packed
    assert pack_field_ts({}, bits) == [] and unpack_field_ts([], TRACE_FIELDS) == {}
    every = {n: i for i, n in enumerate(OBS_FIELDS)}
    assert unpack_field_ts(pack_field_ts(every, field_bits(OBS_FIELDS)), OBS_FIELDS) == every


def test_every_payload_field_has_a_stored_position() -> None:
    # field_ts stores a field's position in these lists: a new payload field is appended to them, never inserted
    from projections.adapters.statements import OBS_FIELDS, TRACE_FIELDS
    from tally_shared.events import ObservationData, TraceData

    assert set(TraceData.model_fields) - {"id"} == set(TRACE_FIELDS)
    assert set(ObservationData.model_fields) - {"id"} == set(OBS_FIELDS)
    assert TRACE_FIELDS[:4] == ("name", "timestamp", "input", "output")
    assert OBS_FIELDS[:4] == ("trace_id", "type", "name", "parent_observation_id")


def test_buckets_are_utc() -> None:
    from datetime import timedelta, timezone

    from projections.domain.rollup import truncate

    plus2 = at(0).astimezone(timezone(timedelta(hours=2)))  # 11:00+02:00 on the same instant
    assert truncate(plus2, "day") == truncate(at(0), "day") == at(-9 * 60)
    assert truncate(plus2, "hour") == at(0)


def test_numeric_value_keys() -> None:
    from projections.domain.rollup import value_key_numeric

    assert [value_key_numeric(v) for v in (0.0, 0.049, 0.05, 0.999, 1, 3, 4.5, 37, 137, -0.2)] == [
        "0.0", "0.0", "0.05", "0.95", "1.0", "3.0", "4.5", "37.0", "140.0", "-0.2"]


def test_rollup_contributions_cancel_out() -> None:
    s = {"name": "q", "data_type": "NUMERIC", "value": 0.123, "source": "EVAL", "timestamp": at(0)}
    dims = trace_dims({"name": "chat", "tags": ["b", "a"], "environment": None}, "prod")
    contribs = contributions("p", s, dims)
    kinds = sorted({k[2] for k, _ in contribs})
    assert kinds == ["", "environment", "tag", "trace_name"]
    assert {k[9] for k, _ in contribs if k[1] == "day"} == {"0.1"}
    assert {k[9] for k, _ in contribs if k[1] == "hour"} == {""}  # hourly numeric rows: count and sums only
    deltas: dict = {}
    add_to(deltas, contribs, +1)
    add_to(deltas, contribs, -1)
    assert all(not any(m) for m in deltas.values())


def test_accumulate_gives_the_same_deltas_as_add_to_contributions() -> None:
    """The projections' fused rollup path against the reference one, over every data type, missing values, odd
    dimensions, both signs and keys shared between scores (same deltas, Decimal representation included)."""
    import random
    from datetime import UTC, datetime, timedelta, timezone

    from projections.domain.rollup import accumulate, dim_pairs

    rnd = random.Random(3)
    traces = [None, {"name": "chat", "environment": "prod", "release": "1", "user_id": "u1", "tags": ["b", "a"]},
              {"name": "", "environment": None, "tags": "xy"}, {"name": "ü", "user_id": 7, "tags": [1, "1", True]}]
    scores = []
    for _ in range(400):
        dt = rnd.choice(["NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT"])
        value = rnd.choice([None, 0.0, 1.0, 3.0, round(rnd.random(), 4), -2.5, 1e20, 1e-7, 12345.678])
        ts = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rnd.randrange(3000))
        if rnd.random() < 0.2:
            ts = ts.astimezone(timezone(timedelta(hours=5)))
        elif rnd.random() < 0.1:
            ts = ts.replace(tzinfo=None)
        s = {"name": rnd.choice(["q", "r"]), "data_type": dt, "value": value, "source": rnd.choice(["EVAL", "API"]),
             "string_value": rnd.choice([None, "yes", "no"]), "config_id": rnd.choice([None, "c"]), "timestamp": ts,
             "environment": rnd.choice([None, "dev"]), "deleted": rnd.random() < 0.05}
        if dt == "CATEGORICAL" and rnd.random() < 0.3:
            s["string_values"] = rnd.choice([["a", "b"], ["a", "a"], []])
        scores.append((s, trace_dims(rnd.choice(traces), s["environment"]), rnd.choice([1, -1])))
    want: dict = {}
    got: dict = {}
    for s, dims, sign in scores:
        add_to(want, contributions("p", s, dims), sign)
        accumulate(got, "p", s, dim_pairs(dims), sign)
    assert got == want
    assert {k: [str(x) for x in m] for k, m in got.items()} == {k: [str(x) for x in m] for k, m in want.items()}


def test_observe_many_matches_observe() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from projections.application.handlers import observe_many

    reg = CollectorRegistry()
    a = Histogram("a", "a", buckets=(0.01, 0.1, 1, 10), registry=reg)
    b = Histogram("b", "b", buckets=(0.01, 0.1, 1, 10), registry=reg)
    values = [0.0, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0, 11.0, 1e9]
    for v in values:
        a.observe(v)
    observe_many(b, values)
    got = {s.name[1:] + str(s.labels): s.value for m in reg.collect() if m.name == "b" for s in m.samples
           if not s.name.endswith("_created")}
    want = {s.name[1:] + str(s.labels): s.value for m in reg.collect() if m.name == "a" for s in m.samples
            if not s.name.endswith("_created")}
    assert got == want and got


def test_accumulate_moved_nets_out_the_rows_old_and_new_dimensions_share() -> None:
    from datetime import UTC, datetime

    from projections.domain.rollup import accumulate, accumulate_moved, dim_pairs

    scores = [{"name": "q", "data_type": dt, "value": v, "string_value": sv, "source": "EVAL", "config_id": None,
               "timestamp": datetime(2026, 1, 2, 3, 4, tzinfo=UTC)}
              for dt, v, sv in (("NUMERIC", 0.25, None), ("BOOLEAN", 1.0, "True"), ("CATEGORICAL", None, "a"),
                                ("NUMERIC", 4.0, None))]
    dims = [trace_dims(None, None), trace_dims(None, "dev"),
            trace_dims({"name": "n", "environment": "prod", "user_id": "u", "tags": ["a", "b"]}, None),
            trace_dims({"name": "m", "environment": "prod", "release": "2", "tags": ["b", "c"]}, None),
            {"trace_name": "x", "tag": ["a", "a"]}]
    for old in dims:
        for new in dims:
            for base in ({}, {("p", "day", "", "", "q", datetime(2026, 1, 2, tzinfo=UTC), "EVAL", "", "NUMERIC",
                               "0.25"): [3, 3, Decimal("0.75"), Decimal("0.1875")]}):
                want = {k: list(m) for k, m in base.items()}
                got = {k: list(m) for k, m in base.items()}
                for s in scores:
                    accumulate(want, "p", s, dim_pairs(old), -1)
                    accumulate(want, "p", s, dim_pairs(new), +1)
                    accumulate_moved(got, "p", s, dim_pairs(old), dim_pairs(new))
                nonzero = {k: m for k, m in want.items() if any(m)}
                assert {k: m for k, m in got.items() if any(m)} == nonzero, (old, new)
