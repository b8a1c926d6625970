"""The server's lake pool opens its engines ahead, so a first burst does not pay for them."""

from __future__ import annotations

import time
from pathlib import Path

from medlake.config import open_workspace
from medlake.service import lake_pool
from medlake.service.lake_pool import WARM_ENGINES, pooled_lake, serving


def _idle(root: Path) -> list[object]:
    with lake_pool._pools_lock:
        pool = lake_pool._pools[root]
    with pool._lock:
        return list(pool._idle)


def test_serving_opens_engines_ahead_and_lends_them(hospital_lake, tmp_path: Path) -> None:
    workspace = open_workspace(hospital_lake.copy(tmp_path / "ws"))
    with serving(workspace):
        deadline = time.monotonic() + 60
        while len(_idle(workspace.root)) < WARM_ENGINES and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = _idle(workspace.root)
        assert len(ready) == WARM_ENGINES  # opened with no request made
        with pooled_lake(workspace) as engine:
            assert any(engine is opened for opened in ready)  # lent, not opened for the call
            assert engine.table("person").count().to_pyarrow().as_py() > 0
    assert not lake_pool.is_serving(workspace)
