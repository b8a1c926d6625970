"""A workspace with a short audit trail, made once and copied for each test to tamper with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medlake.audit import append_event
from medlake.config import open_workspace
from medlake.service.audit import anchor_head
from medlake.service.workspace import init_workspace, open_lake

EVENTS = 12
ANCHORED = 8  # the head is anchored after this many events


def _events(index: int) -> dict[str, object]:
    actors = ("alice", "bob", "carol")
    actions = ("read", "export.dataset", "merge", "user.add")
    return {
        "actor": actors[index % 3],
        "action": actions[index % 4],
        "object_type": "person" if index % 4 == 0 else "cohort",
        "object_id": str(100 + index),
        "detail": {"person_ids": [index, index + 1, 1000 + index], "note": f"事件 {index}"},
        "outcome": "denied" if index % 5 == 4 else "ok",
    }


@pytest.fixture(scope="module")
def trail_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit-template") / "ws"
    init_workspace(root, demo_vocabulary=False)
    workspace = open_workspace(root)
    with open_lake(workspace) as engine:
        for index in range(EVENTS):
            append_event(engine, **_events(index))  # type: ignore[arg-type]
            if index + 1 == ANCHORED:
                anchor_head(workspace, engine)
    return root


@pytest.fixture
def trail(trail_template: Path, tmp_path: Path) -> Path:
    """A private workspace holding the 12-event trail, head anchored at event 8."""
    target = tmp_path / "ws"
    shutil.copytree(trail_template, target)
    return target


@pytest.fixture
def trail_shape() -> tuple[int, int]:
    """(events in the trail, event whose head was anchored)."""
    return EVENTS, ANCHORED
