"""The audit trail's anchors go to the landing mirror too: losing the primary disk does
not lose the proof that the trail is whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from medlake.audit import append_event
from medlake.config import open_workspace
from medlake.service.audit import anchor_now
from medlake.service.workspace import open_lake


def test_anchors_are_written_to_the_mirror_root(
    mirrored_workspace: Callable[[], Path], tmp_path: Path
) -> None:
    root = mirrored_workspace()
    with open_lake(open_workspace(root)) as engine:
        append_event(engine, actor="alice", action="read")
    anchor = anchor_now(root)
    assert anchor is not None
    primary = (root / "audit" / "anchors.jsonl").read_text().splitlines()
    mirrored = (tmp_path / "mirror" / "_anchors" / "anchors.jsonl").read_text().splitlines()
    assert mirrored == primary
    assert json.loads(mirrored[-1])["event_hash"] == anchor.event_hash
