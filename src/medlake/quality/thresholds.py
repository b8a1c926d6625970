"""Thresholds: the percent of violating rows each check allows, from editable TOML files.

The shipped ``data/thresholds.toml`` gives a threshold per check type and per check id
or glob pattern; a workspace file in the same form overrides it entry by entry. For a
check the threshold is, from weakest to strongest: its type's, then the last matching
pattern's (shipped, then workspace), then its exact id's (shipped, then workspace).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from medlake.errors import ConfigError
from medlake.quality.checks import CHECK_TYPES, Check


@dataclass(frozen=True)
class Thresholds:
    """Thresholds by type, by pattern and by exact id; ``sha256`` of the texts read."""

    types: dict[str, float] = field(default_factory=dict)
    patterns: tuple[tuple[str, float], ...] = ()
    exact: dict[str, float] = field(default_factory=dict)
    sha256: str = ""

    def for_check(self, check: Check) -> float:
        value = self.types.get(check.check_type, 0.0)
        for pattern, threshold in self.patterns:
            if fnmatch.fnmatchcase(check.check_id, pattern):
                value = threshold
        return self.exact.get(check.check_id, value)

    def apply(self, checks: Sequence[Check]) -> list[Check]:
        """``checks`` with their thresholds set."""
        return [dataclasses.replace(c, threshold_pct=self.for_check(c)) for c in checks]


def shipped_thresholds_text() -> str:
    return (
        resources.files("medlake.quality")
        .joinpath("data")
        .joinpath("thresholds.toml")
        .read_text(encoding="utf-8")
    )


def load_thresholds(override: Path | None = None) -> Thresholds:
    """The shipped thresholds, overridden by ``override`` if that file exists."""
    texts = [("shipped thresholds.toml", shipped_thresholds_text())]
    if override is not None and override.is_file():
        texts.append((str(override), override.read_text(encoding="utf-8")))
    types: dict[str, float] = {}
    patterns: list[tuple[str, float]] = []
    exact: dict[str, float] = {}
    digest = hashlib.sha256()
    for where, text in texts:
        digest.update(text.encode("utf-8"))
        raw = _parse(where, text)
        for name, value in raw.get("types", {}).items():
            if name not in CHECK_TYPES:
                raise ConfigError(f"{where}: [types] {name}: no check type of that name")
            types[name] = _percent(where, name, value)
        for key, value in raw.get("checks", {}).items():
            threshold = _percent(where, key, value)
            if any(ch in key for ch in "*?["):
                patterns.append((key, threshold))
            else:
                exact[key] = threshold
    return Thresholds(types, tuple(patterns), exact, digest.hexdigest())


def _parse(where: str, text: str) -> dict:  # type: ignore[type-arg]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    unknown = set(raw) - {"types", "checks"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    return raw


def _percent(where: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: {key} = {value!r}: a threshold is a percent from 0 to 100")
    return float(value)


__all__ = ["Thresholds", "load_thresholds", "shipped_thresholds_text"]
