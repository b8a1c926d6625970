"""Clustering with steward constraints, and stable person ids."""

from __future__ import annotations

import random

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medlake.empi.cluster import assign_person_ids, cluster
from medlake.empi.evaluate import pairwise_score


def _random_edges(n: int, m: int, seed: int) -> list[tuple[int, int, float]]:
    r = random.Random(seed)
    return [(r.randrange(n), r.randrange(n), r.random()) for _ in range(m)]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    score = pairwise_score(list(a), list(b))
    return score.predicted_pairs == score.true_pairs == score.true_positive_pairs


def test_without_constraints_it_is_connected_components() -> None:
    n = 2000
    edges = _random_edges(n, 1500, seed=3)
    labels = cluster(n, edges)
    rows = [a for a, _, _ in edges]
    cols = [b for _, b, _ in edges]
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(n, n))
    _, reference = connected_components(graph, directed=False)
    assert _same_partition(labels, reference)


def test_steward_decisions_hold_against_any_chain_of_edges() -> None:
    # A chain 0-1-2-3-4 of strong edges; the steward says 0 and 4 are different people
    # and 5 and 6 (no edge) are the same one.
    edges = [(0, 1, 0.999), (1, 2, 0.9999), (2, 3, 0.995), (3, 4, 0.999)]
    labels = cluster(7, edges, must=[(5, 6)], cannot=[(0, 4)])
    assert labels[0] != labels[4]
    assert labels[5] == labels[6]
    # The weakest edge of the chain is the one left out.
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4]


def test_random_constraints_are_never_broken() -> None:
    n = 500
    r = random.Random(5)
    edges = _random_edges(n, 800, seed=9)
    cannot = [(r.randrange(n), r.randrange(n)) for _ in range(50)]
    cannot = [(a, b) for a, b in cannot if a != b]
    labels = cluster(n, edges, cannot=cannot)
    assert all(labels[a] != labels[b] for a, b in cannot)


def test_ids_are_stable_when_clusters_are() -> None:
    labels = [0, 0, 1, 1, 1, 2]
    home = [11, 12, 13, 14, 15, 16]
    first = assign_person_ids(labels, home, home, established={})
    # Smallest home id per cluster, the first time.
    assert first == [11, 11, 13, 13, 13, 16]
    established = dict.fromkeys(set(first), 1)
    # Same clusters (labels renumbered): nothing changes.
    assert assign_person_ids([5, 5, 3, 3, 3, 9], first, home, established) == first


def test_new_record_joins_and_the_bigger_part_of_a_split_keeps_the_id() -> None:
    current = [13, 13, 13, 7]  # record 3 is new (home id 7 < 13 but not established)
    home = [13, 14, 15, 7]
    established = {13: 1}
    assert assign_person_ids([0, 0, 0, 0], current, home, established) == [13, 13, 13, 13]
    # Person 13 splits 2 + 1: the pair keeps 13, the single record takes its home id.
    assert assign_person_ids([0, 0, 1], [13, 13, 13], [13, 14, 15], established) == [13, 13, 15]
    # Its home id held elsewhere: the next free one of its members.
    assert assign_person_ids([0, 0, 1], [13, 13, 13], [13, 14, 15], established, reserved={15})[
        2
    ] not in (13, 15)
