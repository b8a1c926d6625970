"""What the EMPI service modules share: the system actor, the link options, and the
refresh of observation periods after persons change.

:mod:`medlake.service.empi` (linking, training, scoring) and
:mod:`medlake.service.empi_steward` (review, decisions, merge, unmerge) both need these;
they live here so neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import pyarrow as pa

from medlake.config import EmpiSection
from medlake.empi.run import LinkOptions
from medlake.engine import Engine
from medlake.ingest.ids import initial_person_id
from medlake.ingest.observation_period import refresh_observation_periods

SYSTEM_ACTOR = "system:empi"


def options_from(section: EmpiSection) -> LinkOptions:
    """The domain's link options from a workspace's ``[empi]`` settings."""
    return LinkOptions(
        link_threshold=section.link_threshold,
        review_threshold=section.review_threshold,
        survivorship=section.survivorship,
        trusted_sources=tuple(section.trusted_sources),
        train_max_pairs=section.train_max_pairs,
        retrain_growth=section.retrain_growth,
        name_frequency=section.name_frequency_adjustment,
    )


def home_ids(systems: Sequence[str], patients: Sequence[str]) -> list[int]:
    """The person id ingest gave each source patient (its own, before any link)."""
    return [initial_person_id(s, p) for s, p in zip(systems, patients, strict=True)]


def refresh_periods(engine: Engine, operation_ids: Sequence[str | None]) -> int:
    """Recompute the observation periods of every person the operations moved records
    from or to (a merged-away person is left without one); the periods written.

    A link, merge, decision or unmerge moves CDM rows between persons, and a person's
    observation period spans their rows (:mod:`medlake.ingest.observation_period`).
    """
    ids = [op for op in operation_ids if op]
    if not ids:
        return 0
    changes = engine.table("empi_change")
    wanted = ibis.memtable(pa.table({"id": pa.array(ids, pa.string())}))
    moved = engine.execute(
        changes.filter(changes.operation_id.isin(wanted.id)).select(
            "old_person_id", "new_person_id"
        )
    )
    persons = set(moved.column(0).to_pylist()) | set(moved.column(1).to_pylist())
    return refresh_observation_periods(engine, persons) if persons else 0
