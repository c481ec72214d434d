"""Pure parts: rendering untrusted content, charts, the observation tree, score form values, rule forms."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from console.domain import charts, render
from console.domain.rules import RuleFormError, describe, groups_from_form
from console.domain.scoring import FormError, display_value, form_value, options, parse_value
from console.domain.tree import build_rows


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "[x](JaVaScRiPt:alert(1))",
    "![img](javascript:alert(1))",
    "<a href='javascript:alert(1)'>a</a>",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
])
def test_markdown_never_yields_live_html(source: str) -> None:
    tags = _tags(str(render.sanitised_markdown(source)))
    assert all(t not in ("script", "img", "iframe", "svg") for t, _ in tags), tags
    for _, attrs in tags:
        for name, value in attrs:
            assert not name.startswith("on"), attrs
            assert not (value or "").strip().lower().startswith(("javascript:", "data:")), attrs


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element the HTML really contains (escaped text is not an element)."""
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    P().feed(html)
    return found


def test_markdown_keeps_harmless_formatting_and_safe_links() -> None:
    html = str(render.sanitised_markdown("**bold** [docs](https://example.com)\n\n- a\n- b"))
    assert "<strong>bold</strong>" in html and 'href="https://example.com"' in html and "<li>a</li>" in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_fold_keeps_a_preview_of_long_text() -> None:
    short = render.fold("hello", 100)
    assert not short.folded and short.preview == "hello"
    long = render.fold("line\n" * 500, 100)
    assert long.folded and len(long.preview) <= 100 and long.size == 2500


def test_chat_messages_are_recognised() -> None:
    msgs = render.chat_messages([{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}])
    assert msgs is not None and [(m.role, m.text) for m in msgs] == [("user", "hi"), ("assistant", "yo")]
    assert render.chat_messages({"question": "x"}) is None


def test_chart_labels_are_escaped() -> None:
    svg = str(charts.bar_chart([("<script>x</script>", 3.0)], title="<b>t</b>"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    svg = str(charts.line_chart([("a\"onload=\"x", [("d1", 1.0), ("d2", None), ("d3", 2.0)])], title="t"))
    assert 'onload="x' not in svg and "<path" in svg
    assert "No data yet" in str(charts.line_chart([], title="t"))
    heat = str(charts.heatmap([[3, 1], [0, 2]], ["a", "b"], ["a", "b"], title="m"))
    assert heat.count("<rect") == 4


@pytest.mark.parametrize("values", [[1e308, -1e308], [1e308, 1e308], [1e-320, 1.5e-320], [0.0, 1e-320],
                                    [float(2**70), 1.0], [float("nan"), 1.0], [-1e308]])
def test_charts_draw_any_double(values: list[float]) -> None:
    # Scores are any finite double; a chart of them must never fail the page.
    assert "<svg" in str(charts.line_chart([("s", [(f"d{i}", v) for i, v in enumerate(values)])], title="t"))
    assert "<svg" in str(charts.bar_chart([(f"b{i}", abs(v)) for i, v in enumerate(values)], title="t"))


def test_tree_orders_by_parent_and_start_and_survives_cycles() -> None:
    obs = [
        {"id": "c", "parent_observation_id": "a", "start_time": "2026-01-01T00:00:01Z",
         "end_time": "2026-01-01T00:00:02Z", "usage_details": {"input": 10, "output": 5}},
        {"id": "a", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:04Z",
         "cost_details": {"input": 0.1, "output": 0.2}},
        {"id": "b", "parent_observation_id": "a", "start_time": "2026-01-01T00:00:00.5Z"},
        {"id": "x", "parent_observation_id": "y"}, {"id": "y", "parent_observation_id": "x"},
    ]
    rows = build_rows(obs)
    assert [(r.obs["id"], r.depth) for r in rows][:3] == [("a", 0), ("b", 1), ("c", 1)]
    assert {r.obs["id"] for r in rows} == {"a", "b", "c", "x", "y"}
    a, _, c = rows[:3]
    assert a.duration_ms == 4000 and abs((a.cost or 0) - 0.3) < 1e-9 and c.tokens == 15
    assert c.offset == pytest.approx(0.25) and c.width == pytest.approx(0.25)


def test_options_for_keyboard_picking() -> None:
    cat = {"data_type": "CATEGORICAL", "categories": [{"label": "no", "value": 0}, {"label": "yes", "value": 1}]}
    assert [(o.key, o.label) for o in options(cat)] == [("1", "no"), ("2", "yes")]
    assert [o.key for o in options({"data_type": "NUMERIC", "min_value": 1, "max_value": 5})] == list("12345")
    assert [o.key for o in options({"data_type": "NUMERIC", "min_value": 10, "max_value": 30, "step": 10})] == \
        ["1", "2", "3"]
    assert options({"data_type": "NUMERIC", "min_value": 0, "max_value": 100}) == []
    assert [o.value for o in options({"data_type": "BOOLEAN"})] == ["1", "0"]


def test_parse_value_checks_like_scoring_does() -> None:
    num = {"name": "h", "data_type": "NUMERIC", "min_value": 1, "max_value": 5}
    assert parse_value(num, ["4"]) == 4.0 and parse_value(num, [""]) is None
    for bad in (["0"], ["6"], ["x"], ["nan"]):
        with pytest.raises(FormError):
            parse_value(num, bad)
    cat = {"name": "c", "data_type": "CATEGORICAL", "categories": [{"label": "a", "value": 0}]}
    assert parse_value(cat, ["a"]) == "a"
    with pytest.raises(FormError):
        parse_value(cat, ["b"])
    multi = cat | {"multi_select": True, "categories": [{"label": "a", "value": 0}, {"label": "b", "value": 1}]}
    assert parse_value(multi, ["a", "b", "a"]) == ["a", "b"]
    assert parse_value({"data_type": "BOOLEAN"}, ["0"]) == 0.0
    with pytest.raises(FormError):
        parse_value({"name": "t", "data_type": "TEXT", "max_length": 3}, ["long"])


def test_recorded_scores_round_trip_to_form_values() -> None:
    cat = {"data_type": "CATEGORICAL", "categories": [{"label": "a", "value": 0}, {"label": "b", "value": 1}]}
    assert form_value(cat, {"string_value": "b"}) == ["b"]
    assert form_value(cat, {"value": 1.0}) == ["b"]
    assert form_value({"data_type": "BOOLEAN"}, {"value": 0.0}) == ["0"]
    assert form_value({"data_type": "NUMERIC"}, {"value": 4.0}) == ["4"]
    assert display_value({"data_type": "BOOLEAN", "value": 1.0}) == "True"
    assert display_value({"string_values": ["x", "y"]}) == "x, y"


def test_rule_form_builds_queue_router_groups() -> None:
    form = {
        "cond-0-group": ["1"], "cond-0-field": ["name"], "cond-0-op": ["eq"], "cond-0-value": ["chat"],
        "cond-1-group": ["1"], "cond-1-field": ["metadata"], "cond-1-op": ["in"], "cond-1-value": ["tier=gold, vip"],
        "cond-2-group": ["2"], "cond-2-field": ["score"], "cond-2-op": ["lt"], "cond-2-value": ["0.5"],
        "cond-2-name": ["judge"],
        "cond-3-group": ["2"], "cond-3-field": ["tags"], "cond-3-op": ["exists"], "cond-3-value": [""],
    }
    groups = groups_from_form(form)
    assert groups == [
        [{"field": "name", "op": "eq", "value": "chat"},
         {"field": "metadata", "op": "in", "key": "tier", "value": ["gold", "vip"]}],
        [{"field": "score", "op": "lt", "value": 0.5, "name": "judge"}, {"field": "tags", "op": "exists"}],
    ]
    assert describe(groups) == ("(trace name = chat and metadata.tier one of (a, b) gold, vip) or "
                                "(score judge < 0.5 and tags exists)")
    with pytest.raises(RuleFormError):
        groups_from_form({})
    with pytest.raises(RuleFormError):
        groups_from_form({"cond-0-field": ["score"], "cond-0-op": ["lt"], "cond-0-value": ["1"]})
