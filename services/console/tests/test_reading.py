"""Dashboards, experiments, agreement and calibration pages render the projections' figures as charts."""

from __future__ import annotations

from console.testing.pages import Env, sign_in


def test_dashboard_draws_trend_distribution_and_ci(env: Env) -> None:
    env.world.analytics = {"series": [
        {"name": "helpfulness", "source": "ANNOTATION", "data_type": "NUMERIC", "count": 12, "mean": 3.5,
         "ci_low": 3.0, "ci_high": 4.0, "buckets": [{"bucket": "2026-11-25T00:00:00Z", "count": 5, "mean": 3.2},
                                                    {"bucket": "2026-11-26T00:00:00Z", "count": 7, "mean": 3.8}],
         "distribution": {"type": "histogram", "bins": [{"lower": 1, "upper": 1, "count": 2},
                                                        {"lower": 5, "upper": 5, "count": 4}]}},
        {"name": "helpfulness", "source": "EVAL", "data_type": "NUMERIC", "count": 30, "mean": 4.1,
         "ci_low": 3.9, "ci_high": 4.3, "buckets": [{"bucket": "2026-11-26T00:00:00Z", "count": 30, "mean": 4.1}],
         "distribution": {"type": "histogram", "bins": []}},
    ]}
    c = env.client()
    sign_in(c, "view@t.test")
    r = c.get("/dashboards?name=helpfulness&source=ANNOTATION&tags=a,b&bucket=day")
    assert r.status_code == 200
    assert "helpfulness: mean per day" in r.text and "<path" in r.text and "<circle" in r.text
    assert "95% CI 3" in r.text
    _, params = next(call for call in env.world.calls if call[0] == "score_analytics")
    assert params["name"] == "helpfulness" and params["tags"] == ["a", "b"] and params["source"] == "ANNOTATION"


def test_experiment_comparison_shows_runs_side_by_side(env: Env) -> None:
    env.world.experiments = [{"dataset_run_name": "run-a", "dataset_name": "ds", "traces": 3, "items": 3,
                              "score_names": [{"name": "quality", "kind": "human"}]},
                             {"dataset_run_name": "run-b", "dataset_name": "ds", "traces": 3, "items": 3,
                              "score_names": []}]
    cell = {"human": {"n": 3, "mean": 0.7, "ci_low": 0.5, "ci_high": 0.9, "labels": None},
            "automated": {"n": 3, "mean": 0.6, "ci_low": 0.4, "ci_high": 0.8, "labels": None}}
    env.world.comparison = {
        "runs": ["run-a", "run-b"],
        "aggregates": [{"name": "quality", "runs": {"run-a": cell, "run-b": cell}}],
        "items": [{"dataset_item_id": "item-1", "runs": {"run-a": {"trace_id": "t-a", "scores": {
            "quality": {"human": 1.0, "automated": 0.5}}}}}],
        "win_rate": {"run_a": "run-a", "run_b": "run-b", "score_name": "quality", "wins": 2, "losses": 1, "ties": 0,
                     "items_compared": 3, "win_rate": 0.667, "ci_low": 0.2, "ci_high": 0.94, "method": "Wilson"},
    }
    c = env.client()
    sign_in(c, "view@t.test")
    r = c.get("/experiments?run=run-a&run=run-b")
    assert r.status_code == 200
    assert "66.7%" in r.text and "run-a · human" in r.text and 'href="/traces/t-a"' in r.text
    assert ("compare_experiment", {"runs": "run-a,run-b", "win_score": None}) in env.world.calls


def test_agreement_page_lists_most_disputed_items(env: Env) -> None:
    cfg = env.world.add_config("correctness", "CATEGORICAL", categories=[{"label": "a", "value": 0}])
    q = env.world.add_queue("Double review", [cfg], reviewers_per_item=2)
    env.world.agreement_data = {"alpha": 0.61, "level": "nominal", "percent_agreement": 0.8, "n_pairable_units": 10,
                                "n_coders": 2, "pairs": [{"reviewer_a": "ann", "reviewer_b": "bob", "n": 10,
                                                          "kappa": 0.6, "percent_agreement": 0.8}],
                                "most_disputed": [{"object_type": "TRACE", "object_id": "t9", "trace_id": "t9",
                                                   "ratings": {"ann": "a", "bob": "b"}, "disagreement": 1.0}]}
    c = env.client()
    sign_in(c, "view@t.test")
    r = c.get("/agreement")
    assert r.status_code == 200
    assert "0.61" in r.text and "80.0%" in r.text and 'href="/traces/t9"' in r.text and "<svg" in r.text
    assert ("agreement", (q["id"], cfg["id"])) in env.world.calls


def test_calibration_page_draws_the_confusion_matrix(env: Env) -> None:
    cfg = env.world.add_config("correctness", "BOOLEAN")
    env.world.analytics = {"series": [{"name": "judge", "source": "EVAL"}]}
    env.world.calibration_data = {"n": 20, "kappa": 0.42, "spearman": 0.5, "mae": 0.3, "exact_agreement": 0.75,
                                  "confusion": {"labels": ["False", "True"], "matrix": [[8, 2], [3, 7]]},
                                  "trend": {"points": [{"bucket": "2026-11-26", "kappa": 0.4,
                                                        "exact_agreement": 0.7}]},
                                  "by_evaluator_version": [{"evaluator_version": "v2", "n": 20, "kappa": 0.42}],
                                  "biggest_disagreements": [{"object_id": "t1", "trace_id": "t1", "human": "True",
                                                             "automated": "False", "gap": 1}]}
    c = env.client()
    sign_in(c, "view@t.test")
    r = c.get("/calibration")
    assert r.status_code == 200
    assert "confusion matrix" in r.text and r.text.count('fill-opacity=') == 4 and "75.0%" in r.text
    assert ("calibration", (cfg["id"], "judge")) in env.world.calls


def test_trace_page_annotates_with_any_config(env: Env) -> None:
    cfg = env.world.add_config("tone", "CATEGORICAL", categories=[{"label": "rude", "value": 0},
                                                                  {"label": "kind", "value": 1}])
    t = env.world.add_trace("t-1", input="<script>alert(1)</script>")
    c = env.client()
    token = sign_in(c, "rev@t.test")
    page = c.get(f"/traces/{t['id']}")
    assert "Annotate: tone" in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text
    form = c.get(f"/traces/{t['id']}?annotate={cfg['id']}")
    assert 'id="annotate-form"' in form.text
    r = c.post(f"/traces/{t['id']}/annotate", data={"csrf": token, "config_id": cfg["id"],
                                                    f"score:{cfg['id']}": "kind"})
    assert r.status_code == 303
    [score] = env.world.scores.values()
    assert (score["name"], score["value"], score["source"], score["trace_id"]) == ("tone", "kind", "ANNOTATION",
                                                                                  "t-1")


def test_traces_table_filters_and_adds_selection_to_a_queue(env: Env) -> None:
    q = env.world.add_queue("Q", [])
    for i in range(3):
        env.world.add_trace(f"t{i}", name="chat" if i < 2 else "other", tags=["web"])
    c = env.client()
    token = sign_in(c, "lead@t.test")
    r = c.get("/traces?name=chat&tags=web")
    assert r.status_code == 200 and 'value="t0"' in r.text and 'value="t2"' not in r.text
    r = c.post("/traces/add-to-queue", data={"csrf": token, "queue_id": q["id"], "trace_id": ["t0", "t1"],
                                             "back": "/traces?name=chat"})
    assert r.status_code == 303 and r.headers["location"] == "/traces?name=chat"
    assert sorted(i["object_id"] for i in env.world.items.values()) == ["t0", "t1"]


def test_annotating_one_observation(env: Env) -> None:
    cfg = env.world.add_config("ok", "BOOLEAN")
    t = env.world.add_trace("t-o", observations=[{"id": "obs-1", "name": "tool call"}])
    c = env.client()
    token = sign_in(c, "rev@t.test")
    page = c.get(f"/traces/{t['id']}").text
    assert "/traces/t-o?annotate=all&amp;observation=obs-1" in page
    form = c.get("/traces/t-o?annotate=all&observation=obs-1").text
    assert 'name="observation_id" value="obs-1"' in form
    r = c.post("/traces/t-o/annotate", data={"csrf": token, "config_id": cfg["id"], "observation_id": "obs-1",
                                             f"score:{cfg['id']}": "0"})
    assert r.status_code == 303
    [score] = env.world.scores.values()
    assert (score["observation_id"], score["trace_id"], score["value"]) == ("obs-1", "t-o", 0.0)
