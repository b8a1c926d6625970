"""Records into persons: constrained clustering and stable person ids.

Why our own code: Splink's connected components cannot take "never together"
constraints, and a steward's *not a match* must hold whatever the model says. So
edges (pairs at or above the link threshold, plus steward *match* decisions, which
come first) are added strongest first to a union–find, and an edge that would put
two records a steward separated into one person is skipped. Chaining through weaker
edges therefore stops at a steward's decision. A million edges take a few seconds.

Person ids are stable (:func:`assign_person_ids`): a cluster keeps the id its members
already hold — the oldest established one when they hold several — so re-running or
retraining with the same clusters changes nothing, and a record joining a person takes
that person's id. When a person splits, the part holding most of its records keeps
the id and the other part takes another member's id (its *home* id, the id ingest
gave that record) that no other cluster holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa


class UnionFind:
    """Union–find over record indices, with cannot-link constraints between roots."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)
        self.cannot: dict[int, set[int]] = defaultdict(set)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return int(root)

    def forbid(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        self.cannot[ra].add(rb)
        self.cannot[rb].add(ra)

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; False when a constraint forbids it."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if rb in self.cannot.get(ra, ()):
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        moved = self.cannot.pop(rb, None)
        if moved:
            for other in moved:
                peers = self.cannot[other]
                peers.discard(rb)
                peers.add(ra)
            self.cannot[ra].update(moved)
        return True

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def pair_edges(pairs: pa.Table, index: Mapping[str, int]) -> list[tuple[int, int, float]]:
    """Splink's predicted pairs (``unique_id_l``, ``unique_id_r``, ``match_probability``)
    as ``(i, j, p)`` edges between record positions, for :func:`cluster`."""
    if not pairs.num_rows:
        return []
    return [
        (index[a], index[b], p)
        for a, b, p in zip(
            pairs.column("unique_id_l").to_pylist(),
            pairs.column("unique_id_r").to_pylist(),
            pairs.column("match_probability").to_pylist(),
            strict=True,
        )
    ]


def cluster(
    n: int,
    edges: Iterable[tuple[int, int, float]],
    *,
    must: Iterable[tuple[int, int]] = (),
    cannot: Iterable[tuple[int, int]] = (),
    seed_groups: Iterable[Sequence[int]] = (),
) -> np.ndarray:
    """Cluster label (a member index) of each of ``n`` records.

    ``seed_groups`` are joined first (existing persons, in an incremental run), then
    ``must`` (steward matches), then ``edges`` strongest first; ``cannot`` pairs never
    end in one cluster (a seed group or must-link that breaks one is an error upstream
    and is skipped here).
    """
    uf = UnionFind(n)
    for a, b in cannot:
        uf.forbid(a, b)
    for group in seed_groups:
        first = group[0]
        for other in group[1:]:
            uf.union(first, other)
    for a, b in must:
        uf.union(a, b)
    ordered = sorted(edges, key=lambda e: -e[2])
    for a, b, _ in ordered:
        uf.union(a, b)
    return uf.labels()


def assign_person_ids(
    labels: Sequence[int],
    current: Sequence[int],
    home: Sequence[int],
    established: dict[int, int],
    reserved: Iterable[int] = (),
) -> list[int]:
    """The person id of each record, given its cluster label.

    ``current``: the person id each record holds now; ``home``: the id ingest gave it
    (unique per record); ``established``: person ids the EMPI has already assigned, with
    an order (lower = older). A cluster prefers, among its members' current ids, the
    oldest established one (ties: held by more members, then smaller id); a cluster
    whose every candidate is taken by a bigger cluster takes its smallest free home id.
    ``reserved``: ids held by persons outside this call, which no cluster may take.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        members[int(label)].append(index)
    # Bigger clusters choose first, so the larger part of a split person keeps its id.
    order = sorted(members.values(), key=lambda m: (-len(m), min(home[i] for i in m)))
    never = len(established) + 1
    taken: set[int] = set(reserved)
    result = [0] * len(labels)
    for group in order:
        counts: dict[int, int] = defaultdict(int)
        for i in group:
            counts[current[i]] += 1
        candidates = sorted(
            counts, key=lambda pid: (established.get(pid, never), -counts[pid], pid)
        )
        chosen = next((pid for pid in candidates if pid not in taken), None)
        if chosen is None:
            chosen = min((home[i] for i in group if home[i] not in taken), default=None)
        if chosen is None:  # every member's home id is held elsewhere: very rare
            chosen = max(taken) + 1
        taken.add(chosen)
        for i in group:
            result[i] = chosen
    return result
