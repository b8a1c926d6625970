"""What the EMPI service modules share: the system actor and the link options.

:mod:`medlake.service.empi` (linking, training, scoring) and
:mod:`medlake.service.empi_steward` (review, decisions, merge, unmerge) both need these;
they live here so neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence

from medlake.config import EmpiSection
from medlake.empi.run import LinkOptions
from medlake.ingest.ids import initial_person_id

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
    )


def home_ids(systems: Sequence[str], patients: Sequence[str]) -> list[int]:
    """The person id ingest gave each source patient (its own, before any link)."""
    return [initial_person_id(s, p) for s, p in zip(systems, patients, strict=True)]
