"""Same seed, same bytes: whatever the worker count; another seed, another hospital."""

from __future__ import annotations

import hashlib
from pathlib import Path

from medlake.synth import generate_hospital


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_gives_a_byte_identical_tree_whatever_the_worker_count(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_hospital(tmp_path / "a", 300, 5, workers=1, chunk_size=100,
                      progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    generate_hospital(tmp_path / "b", 300, 5, workers=2, chunk_size=100)
    first, second = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert len(first) > 20
    assert first == second
    assert calls == [(100, 300), (200, 300), (300, 300)]


def test_another_seed_gives_another_hospital(tmp_path: Path) -> None:
    generate_hospital(tmp_path / "a", 150, 5, workers=1)
    generate_hospital(tmp_path / "b", 150, 6, workers=1)
    first, second = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    shared = set(first) & set(second)
    assert "his/patients.csv" in shared
    differing = [path for path in shared if first[path] != second[path]]
    assert "his/patients.csv" in differing
    assert "emr/Patient.ndjson" in differing
