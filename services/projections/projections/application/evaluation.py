"""Experiment comparison, agreement between reviewers, judge calibration, labelled-dataset export. The SQL is
``adapters/queries/evaluation.py``; here: grouping scores by run, item and object, consensus, and the statistics
(``domain/stats.py``)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import orjson

from projections.domain import stats
from projections.domain.errors import Invalid

HUMAN = "ANNOTATION"


@dataclass(frozen=True)
class Subject:
    """Which scores: those of one config, or else those of one name."""

    config_id: str | None
    score_name: str | None


class ExportChunk(NamedTuple):
    objects: list[str]  # the chunk's object ids, in order
    scores: list[dict[str, Any]]  # every human score on them, oldest first
    traces: dict[str, dict[str, Any]]  # their traces by id
    observations: dict[str, dict[str, Any]]  # their observations by id


class EvaluationReads(Protocol):
    async def experiment_runs(self, project_id: str, dataset_name: str | None) -> list[dict[str, Any]]: ...

    async def run_score_names(self, project_id: str) -> list[tuple[str, str, str]]: ...

    async def run_traces(self, project_id: str, runs: Sequence[str]) -> list[dict[str, Any]]: ...

    async def trace_scores(self, project_id: str, trace_ids: Sequence[str]) -> list[dict[str, Any]]: ...

    async def config(self, project_id: str, config_id: str) -> dict[str, Any] | None: ...

    async def human_scores(self, project_id: str, subject: Subject, queue_id: str | None
                           ) -> list[dict[str, Any]]: ...

    async def automated_scores(self, project_id: str, evaluator: str, object_ids: Sequence[str]
                               ) -> list[dict[str, Any]]: ...


class ExportReads(Protocol):
    async def labelled_chunk(self, project_id: str, subject: Subject, *, object_type: str | None,
                             min_reviewers: int, after: str | None, limit: int, include_io: bool
                             ) -> ExportChunk: ...


def kind_of(source: str) -> str:
    return "human" if source == HUMAN else "automated"


def _no_subject() -> Invalid:
    return Invalid("config_id", "required", "config_id or score_name", "name a score config or a score name")


def object_key(s: dict[str, Any]) -> tuple[str, str]:
    """What a score is about: the most specific target it names."""
    if s.get("observation_id"):
        return ("OBSERVATION", s["observation_id"])
    if s.get("trace_id"):
        return ("TRACE", s["trace_id"])
    if s.get("session_id"):
        return ("SESSION", s["session_id"])
    return ("DATASET_RUN", s.get("dataset_run_id") or "")


# -- experiments -----------------------------------------------------------------------------------------------

async def experiment_runs(store: EvaluationReads, project_id: str,
                          dataset_name: str | None) -> list[dict[str, Any]]:
    runs = await store.experiment_runs(project_id, dataset_name)
    names = defaultdict(set)
    for run_name, name, source in await store.run_score_names(project_id):
        names[run_name].add((name, kind_of(source)))
    for run in runs:
        run["score_names"] = [{"name": n, "kind": k} for n, k in sorted(names.get(run["dataset_run_name"], ()))]
    return runs


def _agg(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    return stats.mean_ci(n, float(sum(values)), float(sum(v * v for v in values)))


async def compare_runs(store: EvaluationReads, project_id: str, runs: Sequence[str], *,
                       win_score: str | None, higher_is_better: bool) -> dict[str, Any]:
    if not runs:
        raise Invalid("runs", "min_items", "runs=a,b", "name at least one run")
    traces = await store.run_traces(project_id, runs)
    run_of = {r["id"]: r for r in traces}
    scores = await store.trace_scores(project_id, list(run_of))
    per_run: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    labels: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    per_item: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    item_vals: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for sc in scores:
        tr_row = run_of[sc["trace_id"]]
        run: str = tr_row["dataset_run_name"]
        item: str = tr_row["dataset_item_id"] or tr_row["id"]
        k = kind_of(sc["source"])
        if sc["value"] is not None:
            per_run[(run, sc["name"], k)].append(float(sc["value"]))
            item_vals[(item, run, sc["name"], k)].append(float(sc["value"]))
        if sc["string_value"] is not None:
            labels[(run, sc["name"], k)][sc["string_value"]] += 1
    for tr_row in traces:
        item = tr_row["dataset_item_id"] or tr_row["id"]
        per_item[item].setdefault(tr_row["dataset_run_name"], {"trace_id": tr_row["id"], "scores": {}})
    for (item, run, name, k), vals in item_vals.items():
        cell = per_item[item][run]["scores"].setdefault(name, {"human": None, "automated": None})
        cell[k] = sum(vals) / len(vals)
    names = sorted({(n, r) for (r, n, _) in per_run} | {(n, r) for (r, n, _) in labels})
    aggregates = []
    for name in sorted({n for n, _ in names}):
        row: dict[str, Any] = {"name": name, "runs": {}}
        for run in runs:
            row["runs"][run] = {
                k: {**_agg(per_run.get((run, name, k), [])),
                    "labels": dict(labels[(run, name, k)]) if labels.get((run, name, k)) else None}
                for k in ("human", "automated")
            }
        aggregates.append(row)
    out: dict[str, Any] = {
        "runs": list(runs),
        "aggregates": aggregates,
        "items": [{"dataset_item_id": item, "runs": per_item[item]} for item in sorted(per_item)],
    }
    if len(runs) >= 2:
        a, b = runs[0], runs[1]
        win_name: str | None = win_score or next(iter(sorted({n for (_, n, k) in per_run if k == "human"})), None)
        wins = losses = ties = 0
        if win_name is not None:
            for item in per_item:
                va = item_vals.get((item, a, win_name, "human"))
                vb = item_vals.get((item, b, win_name, "human"))
                if not va or not vb:
                    continue
                ma, mb = sum(va) / len(va), sum(vb) / len(vb)
                if math.isclose(ma, mb):
                    ties += 1
                elif (ma > mb) == higher_is_better:
                    wins += 1
                else:
                    losses += 1
        decided = wins + losses
        low, high = stats.wilson_interval(wins, decided)
        out["win_rate"] = {
            "run_a": a, "run_b": b, "score_name": win_name, "higher_is_better": higher_is_better,
            "items_compared": decided + ties, "wins": wins, "losses": losses, "ties": ties,
            "win_rate": wins / decided if decided else None, "ci_low": low, "ci_high": high,
            "method": "wins / (wins + losses), Wilson 95% interval; ties reported apart",
        }
    return out


# -- agreement ---------------------------------------------------------------------------------------------------

async def _config(store: EvaluationReads, project_id: str, config_id: str | None) -> dict[str, Any] | None:
    if config_id is None:
        return None
    return await store.config(project_id, config_id)


async def _human_scores(store: EvaluationReads, project_id: str, *, config_id: str | None,
                        score_name: str | None, queue_id: str | None) -> list[dict[str, Any]]:
    if config_id is None and score_name is None:
        raise _no_subject()
    return await store.human_scores(project_id, Subject(config_id, score_name), queue_id)


def _rating(sc: dict[str, Any], level: str) -> Any:
    if sc["data_type"] == "NUMERIC" or level in ("interval", "ratio"):
        return sc["value"]
    if level == "ordinal" and sc["value"] is not None:
        return sc["value"]
    if sc.get("string_values"):
        return "|".join(sorted(sc["string_values"]))
    return sc["string_value"] if sc["string_value"] is not None else sc["value"]


async def agreement(store: EvaluationReads, project_id: str, *, queue_id: str | None,
                    config_id: str | None, score_name: str | None, level: str | None,
                    top: int) -> dict[str, Any]:
    scores = await _human_scores(store, project_id, config_id=config_id, score_name=score_name,
                                 queue_id=queue_id)
    cfg = await _config(store, project_id, config_id)
    data_type = (cfg or {}).get("data_type") or (scores[0]["data_type"] if scores else "NUMERIC")
    lvl = level or stats.default_level(data_type)
    if lvl not in stats.LEVELS:
        raise Invalid("level", "enum", " | ".join(stats.LEVELS), "unknown level")
    ratings: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    traces: dict[tuple[str, str], str | None] = {}
    for sc in scores:  # ordered by time: a reviewer's latest score on an object counts
        v = _rating(sc, lvl)
        if v is None:
            continue
        key = object_key(sc)
        ratings[key][sc["author_user_id"]] = v
        traces[key] = sc.get("trace_id")
    domain = None
    if cfg and cfg.get("categories") and lvl in ("ordinal", "nominal"):
        cats = sorted(cfg["categories"], key=lambda c: c["value"])
        domain = [c["value"] for c in cats] if lvl == "ordinal" else [c["label"] for c in cats]
        present = {v for r in ratings.values() for v in r.values()}
        if not present.issubset(domain):
            domain = None
    res = stats.agreement(ratings, lvl, value_domain=domain, top_disputed=top)
    body = res.as_dict()
    body["disputed"] = [
        {"object_type": d["unit"][0], "object_id": d["unit"][1], "trace_id": traces.get(d["unit"]),
         "ratings": d["ratings"], "disagreement": d["disagreement"]} for d in body["disputed"]
    ]
    body["most_disputed"] = body.pop("disputed")
    return {"queue_id": queue_id, "config_id": config_id, "score_name": score_name or (cfg or {}).get("name"),
            "data_type": data_type, **body}


# -- judge calibration ------------------------------------------------------------------------------------------

def _human_consensus(values: list[Any], numeric: bool) -> Any:
    if numeric:
        return sum(values) / len(values)
    counts = Counter(values)
    top = max(counts.values())
    return sorted(v for v, c in counts.items() if c == top)[0]


async def calibration(store: EvaluationReads, project_id: str, *, config_id: str | None,
                      score_name: str | None, evaluator: str, bucket: str, top: int) -> dict[str, Any]:
    humans = await _human_scores(store, project_id, config_id=config_id, score_name=score_name, queue_id=None)
    cfg = await _config(store, project_id, config_id)
    data_type = (cfg or {}).get("data_type") or (humans[0]["data_type"] if humans else "NUMERIC")
    numeric = data_type == "NUMERIC"
    label_values = {c["label"]: float(c["value"]) for c in (cfg or {}).get("categories") or []} or None
    if data_type == "BOOLEAN" and label_values is None:
        label_values = {"False": 0.0, "True": 1.0}
    h_by: dict[tuple[str, str], list[Any]] = defaultdict(list)
    h_rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for sc in humans:
        v = sc["value"] if numeric else (sc["string_value"] if sc["string_value"] is not None else
                                         (None if sc["value"] is None else repr(sc["value"])))
        if v is None:
            continue
        h_by[object_key(sc)].append(v)
        h_rows[object_key(sc)].append(sc)
    autos: dict[tuple[tuple[str, str], str], dict[str, Any]] = {}
    for r in await store.automated_scores(project_id, evaluator, [k[1] for k in h_by]):
        key = object_key(r)
        if key in h_by:
            autos[(key, r["evaluator_version"] or "")] = r  # latest per object and version

    def auto_value(a: dict[str, Any]) -> Any:
        if numeric:
            return a["value"]
        return a["string_value"] if a["string_value"] is not None else (
            None if a["value"] is None else repr(a["value"]))

    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for (key, _), a in autos.items():
        if key not in latest or (a["timestamp"], a["id"]) > (latest[key]["timestamp"], latest[key]["id"]):
            latest[key] = a
    pairs, meta = [], []
    for key, a in sorted(latest.items()):
        av = auto_value(a)
        if av is None:
            continue
        hv = _human_consensus(h_by[key], numeric)
        pairs.append((hv, av))
        meta.append((key, a))
    overall = stats.calibration(pairs, data_type=data_type, label_values=label_values)
    unit = "week" if bucket == "week" else "day"

    def trunc(ts: datetime) -> datetime:
        d = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        return d if unit == "day" else d.fromordinal(d.toordinal() - d.weekday()).replace(tzinfo=d.tzinfo)

    trend: dict[datetime, list[tuple[Any, Any]]] = defaultdict(list)
    for (hv, av), (_, a) in zip(pairs, meta, strict=True):
        trend[trunc(a["timestamp"])].append((hv, av))
    by_version: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for (key, version), a in autos.items():
        av = auto_value(a)
        if av is not None:
            by_version[version].append((_human_consensus(h_by[key], numeric), av))

    def brief(ps: list[tuple[Any, Any]]) -> dict[str, Any]:
        r = stats.calibration(ps, data_type=data_type, label_values=label_values)
        return {k: r.get(k) for k in ("n", "kappa", "spearman", "mae", "exact_agreement")}

    def gap(hv: Any, av: Any) -> float:
        if numeric:
            return abs(float(hv) - float(av))
        if label_values and str(hv) in label_values and str(av) in label_values:
            return abs(label_values[str(hv)] - label_values[str(av)])
        return 0.0 if hv == av else 1.0

    worst = sorted(zip(pairs, meta, strict=True), key=lambda pm: (-gap(*pm[0]), pm[1][0]))
    disagreements = [
        {"object_type": key[0], "object_id": key[1], "trace_id": a.get("trace_id"), "human": hv, "automated": av,
         "gap": gap(hv, av), "evaluator_version": a.get("evaluator_version"), "automated_comment": a.get("comment"),
         "reviewers": [{"reviewer": h["author_user_id"], "value": h["value"], "string_value": h["string_value"],
                        "comment": h["comment"]} for h in h_rows[key]]}
        for (hv, av), (key, a) in worst[:top] if gap(hv, av) > 0
    ]
    return {
        "config_id": config_id, "score_name": score_name or (cfg or {}).get("name"), "evaluator": evaluator,
        "data_type": data_type, **overall,
        "trend": {"bucket": unit, "points": [{"bucket": b, **brief(ps)} for b, ps in sorted(trend.items())]},
        "by_evaluator_version": [{"evaluator_version": v or None, **brief(ps)} for v, ps in sorted(by_version.items())],
        "biggest_disagreements": disagreements,
    }


# -- export ------------------------------------------------------------------------------------------------------

async def export_dataset(
    store: ExportReads, project_id: str, *, config_id: str | None,
    score_name: str | None, object_type: str | None, min_reviewers: int, min_agreement: float,
    include_io: bool, chunk: int, hidden_traces: frozenset[str] = frozenset(),
) -> AsyncIterator[bytes]:
    """JSONL: one labelled object per line with every human score on it, its consensus label and the share of
    reviewers agreeing with it. Objects are read in chunks of ``chunk`` (keyset by object id), so memory stays
    flat whatever the export's size."""
    if config_id is None and score_name is None:
        raise _no_subject()
    subject = Subject(config_id, score_name)
    after: str | None = None
    while True:
        objs, rows, tmap, omap = await store.labelled_chunk(
            project_id, subject, object_type=object_type, min_reviewers=min_reviewers, after=after, limit=chunk,
            include_io=include_io)
        if not objs:
            return
        after = objs[-1]
        by_obj: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in rows:
            by_obj[r["observation_id"] or r["trace_id"]][r["author_user_id"]] = r
        lines = []
        for oid in objs:
            by_reviewer = by_obj.get(oid, {})
            if len(by_reviewer) < min_reviewers:
                continue
            first = next(iter(by_reviewer.values()))
            if first["trace_id"] in hidden_traces:
                continue  # blind review: the caller may not read others' scores of this trace yet
            numeric = first["data_type"] == "NUMERIC"
            vals = [r["value"] if numeric else (r["string_value"] if r["string_value"] is not None else r["value"])
                    for r in by_reviewer.values()]
            vals = [v for v in vals if v is not None]
            if not vals:
                continue
            label = _human_consensus(vals, numeric)
            agree = sum(1 for v in vals if v == label) / len(vals) if not numeric else (
                sum(1 for v in vals if math.isclose(v, label)) / len(vals))
            if not numeric and agree < min_agreement:
                continue
            if numeric and min_agreement > 0 and len(set(vals)) > 1 and agree < min_agreement:
                continue
            is_obs = first["observation_id"] is not None
            record: dict[str, Any] = {
                "object_type": "OBSERVATION" if is_obs else "TRACE",
                "object_id": oid,
                "trace_id": first["trace_id"],
                "score_name": first["name"],
                "config_id": first["config_id"],
                "data_type": first["data_type"],
                "label": label,
                "n_reviewers": len(vals),
                "agreement": agree,
                "scores": [{"reviewer": r["author_user_id"], "value": r["value"], "string_value": r["string_value"],
                            "comment": r["comment"], "timestamp": r["timestamp"]} for r in by_reviewer.values()],
            }
            target = omap.get(oid) if is_obs else tmap.get(oid)
            trace = tmap.get(first["trace_id"] or "")
            if trace is not None:
                record["trace_name"] = trace.get("name")
                record["tags"] = trace.get("tags") or []
            if target is not None and include_io:
                record["input"] = target.get("input")
                record["output"] = target.get("output")
                record["metadata"] = target.get("metadata")
            if is_obs and target is not None:
                record["observation_name"] = target.get("name")
                record["observation_type"] = target.get("type")
            lines.append(orjson.dumps(record, option=orjson.OPT_UTC_Z) + b"\n")
        if lines:
            yield b"".join(lines)
