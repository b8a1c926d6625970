"""A link run: score, cluster, give stable ids, move rows, queue the uncertain pairs.

A *full* run scores every candidate pair (the first run, or ``--full``); an
*incremental* run scores only records that are new or whose identifiers changed since
they were last linked, against every record and among themselves (Splink's
``predict_between`` / ``predict_within``), and keeps the existing persons as they are
except where a new record joins or bridges them. Steward decisions are applied in
both: *match* pairs are joined first, *not a match* pairs are never joined.

Everything the run changes in the lake happens in one transaction (on engines that have
transactions; see :func:`medlake.empi.store.atomically`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.clock import utc_now
from medlake.empi import model as linkage_model
from medlake.empi import store
from medlake.empi.cluster import assign_person_ids, cluster, pair_edges
from medlake.empi.dialect import stored_form
from medlake.empi.features import feature_table
from medlake.empi.golden import GOLDEN_FIELDS, golden_records
from medlake.empi.linkage import linker_factory, predict_all, predict_new, splink_api
from medlake.empi.moves import CHANGE_SCHEMA, MoveResult, apply_changes
from medlake.engine import Engine

HomeIds = Callable[[Sequence[str], Sequence[str]], list[int]]


@dataclass(frozen=True)
class LinkOptions:
    link_threshold: float = 0.99
    review_threshold: float = 0.5
    survivorship: str = "most_trusted"
    trusted_sources: tuple[str, ...] = ("his", "emr", "lis")
    train_max_pairs: float = 1e6
    #: Retrain before linking once the lake holds this many times the records the
    #: active model was trained on (0: never); see :func:`needs_training`.
    retrain_growth: float = 2.0
    #: Term-frequency adjustments on the name levels (``[empi] name_frequency_adjustment``).
    name_frequency: bool = False


@dataclass
class LinkOutcome:
    """What a link run did."""

    mode: str  # full, incremental, nothing
    operation_id: str | None = None
    model_id: str | None = None
    trained: bool = False
    records: int = 0
    new_records: int = 0
    pairs_scored: int = 0
    links: int = 0
    persons_before: int = 0
    persons_after: int = 0
    changes: int = 0
    review_queue: int = 0
    rows_moved: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    person_ids: list[int] = field(default_factory=list)


def train_model(engine: Engine, options: LinkOptions, actor: str) -> tuple[str, int]:
    """Train a model on the lake's records and make it the active one."""
    records = store.load_records(engine)
    features = feature_table(records)
    linkage_model.check_trainable(features)
    with splink_api(engine) as api:
        settings = linkage_model.train(
            linker_factory(api, features),
            max_pairs=options.train_max_pairs,
            name_frequency=options.name_frequency,
        )
    # Stored in one dialect whichever engine trained it (see medlake.empi.dialect).
    settings = stored_form(settings, linkage_model.base_settings())
    return store.save_model(
        engine, settings, records=records.num_rows, actor=actor
    ), records.num_rows


def needs_training(stored: store.StoredModel | None, records: int, options: LinkOptions) -> bool:
    """Whether to (re)train before linking ``records`` records.

    With no model; with a model of another definition (this medlake compares other
    fields or blocks otherwise); or when the lake has grown ``retrain_growth``-fold
    since training: a model trained on the first system ingested (one hospital's HIS,
    say) has seen none of the spellings the next systems bring (pinyin names, given
    name first), and would score their pairs with m-probabilities it never estimated.
    """
    if stored is None or not linkage_model.is_current(
        stored.settings, name_frequency=options.name_frequency
    ):
        return True
    growth = options.retrain_growth
    return bool(growth) and records >= growth * max(stored.records, 1)


def link(
    engine: Engine,
    options: LinkOptions,
    *,
    home_ids: HomeIds,
    actor: str,
    full: bool = False,
    kind: str = "link",
) -> LinkOutcome:
    """Link the lake's source patients into persons (see the module docstring)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not full and engine.count("empi_record") > 0 and not store.has_unlinked(engine):
        return LinkOutcome(mode="nothing", records=engine.count("empi_feature"))
    records = store.load_records(engine)
    features, new_mask = store.features_with_cache(engine, records)
    timings["features"] = time.perf_counter() - started
    keys = features.column("unique_id").to_pylist()
    incremental = engine.count("empi_record") > 0 and not full
    outcome = LinkOutcome(mode="incremental" if incremental else "full", records=len(keys))
    outcome.new_records = sum(new_mask) if incremental else len(keys)
    if incremental and not any(new_mask):
        outcome.mode = "nothing"
        return outcome

    stored = store.active_model(engine)
    if needs_training(stored, len(keys), options):
        t = time.perf_counter()
        model_id, _ = train_model(engine, options, actor)
        outcome.trained = True
        timings["train"] = time.perf_counter() - t
        stored = store.active_model(engine)
        assert stored is not None
        assert stored.model_id == model_id
    outcome.model_id = stored.model_id

    t = time.perf_counter()
    with splink_api(engine) as api:
        if incremental:
            mask = pa.array(new_mask)
            pairs = predict_new(
                api,
                features.filter(pc.invert(mask)),
                features.filter(mask),
                stored.settings,
                options.review_threshold,
            )
        else:
            pairs = predict_all(api, features, stored.settings, options.review_threshold)
    timings["predict"] = time.perf_counter() - t
    outcome.pairs_scored = pairs.num_rows

    t = time.perf_counter()
    index = {k: i for i, k in enumerate(keys)}
    current = records.column("person_id").to_pylist()
    decided = store.decisions(engine)
    must, cannot = _decision_edges(decided, index)
    edges: list[tuple[int, int, float]] = []
    band: list[int] = []
    if pairs.num_rows:
        lefts = pairs.column("unique_id_l").to_pylist()
        rights = pairs.column("unique_id_r").to_pylist()
        probabilities = pairs.column("match_probability").to_pylist()
        for row, (a, b, p) in enumerate(zip(lefts, rights, probabilities, strict=True)):
            if p >= options.link_threshold:
                edges.append((index[a], index[b], p))
            else:
                band.append(row)
    outcome.links = len(edges)
    outcome.persons_before = len(set(current))
    # Which records are clustered now: all of them in a full run; in an incremental
    # one the new records and every record of a person they may join, with the
    # existing persons as seeds (the rest of the lake stays as it is).
    if incremental:
        involved = {current[i] for i, is_new in enumerate(new_mask) if is_new}
        for a, b, _ in edges:
            involved.update((current[a], current[b]))
        for a, b in must:
            involved.update((current[a], current[b]))
        subset = [i for i, pid in enumerate(current) if new_mask[i] or pid in involved]
    else:
        subset = list(range(len(keys)))
    local = {i: j for j, i in enumerate(subset)}

    def local_pairs(pairs_: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(local[a], local[b]) for a, b in pairs_ if a in local and b in local]

    seeds: list[list[int]] = []
    if incremental:
        groups: dict[int, list[int]] = defaultdict(list)
        for i in subset:
            if not new_mask[i]:
                groups[current[i]].append(local[i])
        seeds = list(groups.values())
    labels = cluster(
        len(subset),
        [(local[a], local[b], p) for a, b, p in edges],
        must=local_pairs(must),
        cannot=local_pairs(cannot),
        seed_groups=seeds,
    )
    if incremental:
        touched = {int(labels[local[i]]) for i in subset if new_mask[i]}
        chosen = [i for i in subset if int(labels[local[i]]) in touched]
    else:
        chosen = subset
    chosen_current = {current[i] for i in chosen}
    reserved = set(current) - chosen_current
    if incremental:
        # A person partly outside the chosen clusters keeps its id outside.
        outside = {current[i] for i in subset if int(labels[local[i]]) not in touched}
        reserved |= outside
    systems = records.column("source_system").to_pylist()
    patients = records.column("source_patient_id").to_pylist()
    seq = store.next_seq(engine)
    assigned = assign_person_ids(
        [labels[local[i]] for i in chosen],
        [current[i] for i in chosen],
        home_ids([systems[i] for i in chosen], [patients[i] for i in chosen]),
        store.established(engine),
        reserved=reserved,
    )
    new_person = list(current)
    for i, pid in zip(chosen, assigned, strict=True):
        new_person[i] = pid
    outcome.persons_after = len(set(new_person))
    timings["cluster"] = time.perf_counter() - t

    changed = [i for i in chosen if new_person[i] != current[i]]
    changes = pa.table(
        {
            "source_system": [systems[i] for i in changed],
            "source_patient_id": [patients[i] for i in changed],
            "old_person_id": pa.array([current[i] for i in changed], pa.int64()),
            "new_person_id": pa.array([new_person[i] for i in changed], pa.int64()),
        },
        schema=CHANGE_SCHEMA,
    )
    outcome.changes = changes.num_rows
    operation_id = store.derived_id("operation", seq, kind)
    outcome.operation_id = operation_id
    t = time.perf_counter()
    fresh = pa.array(new_mask)
    linked_keys = features.filter(fresh).column("unique_id").to_pylist()
    linked_hashes = store.features_hashes(features.filter(fresh))
    affected = sorted({new_person[i] for i in chosen})
    with store.atomically(engine):
        moves = apply_changes(engine, changes, operation_id=operation_id)
        store.write_operation(
            engine, operation_id=operation_id, seq=seq, kind=kind, actor=actor,
            changes=changes, moves=moves,
            detail={"mode": outcome.mode, "model_id": stored.model_id, "links": len(edges),
                    "pairs_scored": outcome.pairs_scored},
        )  # fmt: skip
        store.establish(engine, affected, seq)
        store.save_features(engine, records, features, new_mask)
        store.mark_linked(engine, linked_keys, linked_hashes, operation_id)
        outcome.review_queue = _queue(
            engine, pairs, band, index, new_person, decided, stored, incremental, keys, new_mask
        )
        update_golden(engine, affected, options)
    timings["apply"] = time.perf_counter() - t
    outcome.rows_moved = dict(moves.rows_moved)
    outcome.seconds = timings
    outcome.person_ids = affected
    return outcome


def _decision_edges(
    decided: dict[str, dict[str, Any]], index: dict[str, int]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    must, cannot = [], []
    for row in decided.values():
        a = index.get(store.record_key(row["left_system"], row["left_id"]))
        b = index.get(store.record_key(row["right_system"], row["right_id"]))
        if a is None or b is None:
            continue
        (must if row["decision"] == "match" else cannot).append((a, b))
    return must, cannot


def _bayes_factor(pair: dict[str, Any], name: str) -> float | None:
    """The comparison's Bayes factor, its term-frequency adjustment included.

    Splink 5 scores in match weights (``mw_<name>``, log2 of the Bayes factor, and
    ``mw_tf_adj_<name>`` for a term-frequency adjustment), not Bayes factors.
    """
    weight = pair.get(f"mw_{name}")
    if weight is None:
        return None
    return float(2.0 ** (float(weight) + float(pair.get(f"mw_tf_adj_{name}") or 0.0)))


def evidence(pair: dict[str, Any], labels: dict[str, dict[int, str]]) -> dict[str, Any]:
    """Per field: the level reached, its label and its Bayes factor."""
    out = {}
    for name, named in labels.items():
        gamma = pair.get(f"gamma_{name}")
        out[name] = {
            "level": gamma,
            "label": named.get(gamma, str(gamma)) if gamma is not None else None,
            "bayes_factor": _bayes_factor(pair, name),
        }
    return out


def _queue(
    engine: Engine,
    pairs: pa.Table,
    band: list[int],
    index: dict[str, int],
    labels: Any,
    decided: dict[str, dict[str, Any]],
    stored: store.StoredModel,
    incremental: bool,
    keys: list[str],
    new_mask: list[bool],
) -> int:
    """Replace the pending queue entries this run re-scored; return the queue's size."""
    pending = engine.table("empi_pair")
    if incremental:
        fresh = []
        new_keys = {k for k, n in zip(keys, new_mask, strict=True) if n}
        rows = engine.execute(pending.filter(pending.status == "pending"))
        for row in rows.to_pylist():
            a = store.record_key(row["left_system"], row["left_id"])
            b = store.record_key(row["right_system"], row["right_id"])
            same = a in index and b in index and labels[index[a]] == labels[index[b]]
            if a in new_keys or b in new_keys or same:
                fresh.append(row["pair_id"])
        if fresh:
            gone = ibis.memtable(pa.table({"id": pa.array(fresh, pa.string())}))
            engine.delete_where("empi_pair", pending.pair_id.isin(gone.id))
    else:
        engine.delete_where("empi_pair", pending.status == "pending")
    names = linkage_model.comparison_labels(stored.settings)
    rows = []
    taken = set(
        engine.execute(engine.table("empi_pair").select("pair_id")).column("pair_id").to_pylist()
    )
    queued_at = utc_now()
    subset = pairs.take(pa.array(band, pa.int64())).to_pylist() if band else []
    for pair in subset:
        a, b = pair["unique_id_l"], pair["unique_id_r"]
        if labels[index[a]] == labels[index[b]]:
            continue
        pid = store.pair_id(a, b)
        if pid in decided or pid in taken:
            continue
        taken.add(pid)
        (ls, li), (rs, ri) = store.split_key(a), store.split_key(b)
        rows.append(
            {
                "pair_id": pid, "left_system": ls, "left_id": li, "right_system": rs,
                "right_id": ri, "match_probability": float(pair["match_probability"]),
                "match_weight": float(pair["match_weight"]),
                "evidence_json": json.dumps(evidence(pair, names), ensure_ascii=False),
                "model_id": stored.model_id, "status": "pending", "queued_at": queued_at,
            }
        )  # fmt: skip
    if rows:
        engine.load_arrow("empi_pair", pa.Table.from_pylist(rows))
    return engine.count(engine.table("empi_pair").filter(lambda t: t.status == "pending"))


def update_golden(engine: Engine, person_ids: list[int], options: LinkOptions) -> int:
    """Recompute the golden records of ``person_ids`` (and drop those of vanished ids)."""
    if not person_ids:
        return 0
    records = store.load_records(engine, person_ids)
    rows = golden_records(
        records.select(
            ["person_id", "source_system", "source_version", *GOLDEN_FIELDS]
        ).to_pylist(),
        rule=options.survivorship,
        trusted=options.trusted_sources,
    )
    golden = engine.table("empi_golden")
    ids = ibis.memtable(pa.table({"id": pa.array(person_ids, pa.int64())}))
    engine.delete_where("empi_golden", golden.person_id.isin(ids.id))
    if rows:
        stamp = utc_now()
        for row in rows:
            row["updated_at"] = stamp
        engine.load_arrow("empi_golden", pa.Table.from_pylist(rows))
    return len(rows)


def apply_and_record(
    engine: Engine,
    changes: pa.Table,
    *,
    kind: str,
    actor: str,
    detail: dict[str, Any],
    options: LinkOptions,
    undoes: str | None = None,
    restore: dict[tuple[str, int], pa.Table] | None = None,
    drop_created: dict[tuple[str, int], bool] | None = None,
) -> tuple[str, MoveResult]:
    """Apply a change set as one recorded operation (merge, split, unmerge, decision)."""
    with store.atomically(engine):
        seq = store.next_seq(engine)
        operation_id = store.derived_id("operation", seq, kind)
        moves = apply_changes(
            engine, changes, operation_id=operation_id, restore=restore, drop_created=drop_created
        )
        store.write_operation(
            engine, operation_id=operation_id, seq=seq, kind=kind, actor=actor,
            changes=changes, moves=moves, detail=detail, undoes=undoes,
        )  # fmt: skip
        persons = sorted(
            set(changes.column("old_person_id").to_pylist())
            | set(changes.column("new_person_id").to_pylist())
        )
        store.establish(engine, changes.column("new_person_id").to_pylist(), seq)
        update_golden(engine, persons, options)
    return operation_id, moves


def relink_persons(
    engine: Engine,
    options: LinkOptions,
    person_ids: list[int],
    *,
    home_ids: HomeIds,
    actor: str,
    kind: str = "decision",
) -> tuple[str | None, int]:
    """Re-cluster only the records of ``person_ids`` (after a steward's *not a match*).

    Their pairs are scored with the active model and clustered with every decision;
    the rest of the lake is not read beyond the ids it holds (which stay reserved).
    Returns the operation id (None when nothing changed) and the source patients moved.
    """
    stored = store.active_model(engine)
    records = store.load_records(engine, person_ids)
    if stored is None or records.num_rows < 2:
        return None, 0
    features = feature_table(records)
    keys = features.column("unique_id").to_pylist()
    with splink_api(engine) as api:
        pairs = predict_all(api, features, stored.settings, options.link_threshold)
    index = {k: i for i, k in enumerate(keys)}
    edges = pair_edges(pairs, index)
    must, cannot = _decision_edges(store.decisions(engine), index)
    labels = cluster(len(keys), edges, must=must, cannot=cannot)
    current = records.column("person_id").to_pylist()
    systems = records.column("source_system").to_pylist()
    patients = records.column("source_patient_id").to_pylist()
    held = engine.execute(engine.table("source_patient").select("person_id").distinct())
    reserved = set(held.column(0).to_pylist()) - set(person_ids)
    assigned = assign_person_ids(
        labels, current, home_ids(systems, patients), store.established(engine), reserved
    )
    changed = [i for i in range(len(keys)) if assigned[i] != current[i]]
    if not changed:
        return None, 0
    changes = pa.table(
        {
            "source_system": [systems[i] for i in changed],
            "source_patient_id": [patients[i] for i in changed],
            "old_person_id": pa.array([current[i] for i in changed], pa.int64()),
            "new_person_id": pa.array([assigned[i] for i in changed], pa.int64()),
        },
        schema=CHANGE_SCHEMA,
    )
    operation_id, _ = apply_and_record(
        engine, changes, kind=kind, actor=actor, detail={"relinked": person_ids}, options=options
    )
    return operation_id, len(changed)
