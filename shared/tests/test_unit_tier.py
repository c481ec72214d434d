"""The unit tier (``pytest -m unit``): which tests the shared plugin marks."""

from __future__ import annotations

from typing import Any

import pytest

from tally_shared.testing.plugin import pytest_collection_modifyitems


class _Item:
    def __init__(self, fixtures: list[str], markers: tuple[str, ...] = ()) -> None:
        self.fixturenames = fixtures
        self.markers = list(markers)

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None

    def add_marker(self, mark: Any) -> None:
        self.markers.append(mark.name)


def test_a_test_is_unit_unless_it_needs_infrastructure_processes_or_a_browser() -> None:
    plain, tmp = _Item([]), _Item(["tmp_path", "monkeypatch"])
    broker, database, system = _Item(["kafka_bootstrap"]), _Item(["identity_db", "tmp_path"]), _Item(["tally_stack"])
    processes, browser = _Item(["tmp_path"], ("processes",)), _Item([], ("browser",))
    items = [plain, tmp, broker, database, system, processes, browser]
    pytest_collection_modifyitems(items)
    assert [i for i in items if "unit" in i.markers] == [plain, tmp]


def test_this_test_is_in_the_unit_tier(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
