"""Cohorts: definitions as data (:mod:`.model`), ATLAS/Circe import (:mod:`.circe`), the one
Ibis compiler (:mod:`.compiler`, :mod:`.events`) and omics criteria (:mod:`.omics`).

Example definitions ship in ``medlake/cohort/examples/`` (:func:`example_path`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medlake.cohort.model import CohortDefinition


def example_path(name: str) -> Path:
    """Path of a bundled example definition, e.g. ``example_path("t2d_hba1c_metformin")``."""
    return Path(str(resources.files("medlake.cohort") / "examples" / f"{name}.json"))


def example_names() -> list[str]:
    folder = resources.files("medlake.cohort") / "examples"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


__all__ = ["CohortDefinition", "example_names", "example_path"]
