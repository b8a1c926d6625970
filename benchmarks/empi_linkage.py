"""EMPI linkage at scale: N source patient records from scratch, then a new batch.

Records are made by the synthetic hospital's own identity code (``medlake.synth``):
true persons, recorded in HIS, LIS and EMR with those systems' noise (hanzi and pinyin
typos, pinyin names, given name first, day/month swaps, missing and mistyped resident
IDs, changed phones and addresses, 2.5 % duplicate registrations). They are loaded
straight into a workspace's ``source_patient`` and ``pii_person`` (no CDM rows: this
measures linkage), then

1. ``link_workspace`` from scratch (trains the model, scores, clusters, writes),
2. ``--new`` more records (of existing and new persons) are added and linked
   incrementally, twice (both timed; the second is the figure reported).

Both are scored against the truth (pairwise precision/recall). Reference: the figures
of the issue (1M records ≤ 10 min within 8 GiB; 10k new vs 1M ≤ 30 s).

    .venv/bin/python benchmarks/empi_linkage.py --records 1000000 --new 10000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medlake.access.context import acting_as
from medlake.access.policy import Principal, Role
from medlake.config import open_workspace, write_settings
from medlake.empi.evaluate import pairwise_score
from medlake.ingest.ids import stable_ids
from medlake.service.empi import link_workspace
from medlake.service.workspace import init_workspace, open_lake
from medlake.synth.identity import DUPLICATE_RATE, PatientIdScheme, make_source_patient
from medlake.synth.people import draw_people

SYSTEMS = (("his", 0.95), ("emr", 0.70), ("lis", 0.60))
RECORDS_PER_PERSON = sum(share for _, share in SYSTEMS) * (1 + DUPLICATE_RATE)


def make_records(n_records: int, seed: int) -> tuple[list[dict], list[str]]:
    """About ``n_records`` identity records and, for each, its true person."""
    rng = np.random.default_rng(seed)
    r = random.Random(seed)
    scheme = PatientIdScheme(seed)
    persons = draw_people(rng, 0, int(n_records / RECORDS_PER_PERSON) + 1)
    records, truth = [], []
    for person in persons:
        for system, share in SYSTEMS:
            if r.random() >= share:
                continue
            for duplicate in (False, True):
                if duplicate and r.random() >= DUPLICATE_RATE:
                    continue
                patient_id = scheme.patient_id(system.upper(), person.index, duplicate)
                when = person.birth_ord + r.randrange(0, 20_000)
                sp = make_source_patient(system.upper(), person, patient_id, when, r,
                                         duplicate=duplicate)  # fmt: skip
                year, month, day = sp.birth
                try:
                    birth = dt.date(year, month, day)
                except ValueError:
                    birth = None
                hanzi = sp.script == "hanzi"
                records.append(
                    {
                        "source_system": system, "source_patient_id": patient_id,
                        "name_hanzi": sp.name if hanzi else None,
                        "name_pinyin": None if hanzi else sp.name,
                        "family_name": sp.family, "given_name": sp.given,
                        "resident_id": sp.resident_id, "birth_date": birth,
                        "sex": person.sex, "phone": sp.phone,
                        "address": sp.address.text if sp.address else None,
                        "postcode": sp.address.district.postcode if sp.address else None,
                    }
                )  # fmt: skip
                truth.append(person.key)
    return records, truth


def load(workspace: Path, records: list[dict]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    table = pa.Table.from_pylist(records)
    n = table.num_rows
    systems = table.column("source_system").combine_chunks()
    keys = table.column("source_patient_id").combine_chunks()
    person_ids = pa.concat_arrays(
        [
            stable_ids(("person", system), keys.filter(pc.equal(systems, system)))
            for system in ("his", "emr", "lis")
        ]
    )
    by_system = pa.concat_tables(
        [table.filter(pc.equal(systems, s)) for s in ("his", "emr", "lis")]
    )
    batch = pa.array(["bench"] * n)
    stamp = pa.array([now] * n, pa.timestamp("us"))
    with open_lake(open_workspace(workspace)) as engine:
        engine.load_arrow(
            "source_patient",
            pa.table(
                {
                    "source_system": by_system.column("source_system"),
                    "source_patient_id": by_system.column("source_patient_id"),
                    "person_id": person_ids, "batch_id": batch,
                    "first_seen": stamp, "last_seen": stamp,
                }
            ),
        )  # fmt: skip
        engine.load_arrow(
            "pii_person",
            by_system.append_column("person_id", person_ids)
            .append_column("batch_id", batch)
            .append_column("source_version", pa.array([1] * n, pa.int64()))
            .append_column("recorded_at", stamp),
        )


def score(workspace: Path, truth: dict[str, str]):
    with open_lake(open_workspace(workspace)) as engine:
        rows = engine.execute(engine.table("source_patient"))
    keys = [
        f"{s}|{p}"
        for s, p in zip(rows.column("source_system").to_pylist(),
                        rows.column("source_patient_id").to_pylist(), strict=True)
    ]  # fmt: skip
    persons = rows.column("person_id").to_pylist()
    return pairwise_score(persons, [truth[k] for k in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medlake-empi-bench"))
    parser.add_argument("--memory-limit", default="8GB")
    parser.add_argument(
        "--name-frequency",
        action="store_true",
        help="[empi] name_frequency_adjustment on (term-frequency adjustments)",
    )
    args = parser.parse_args()
    # Linking is a data steward's permission (as `medlake empi link` checks it).
    with acting_as(Principal("benchmark", Role.STEWARD)):
        run(args)


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    records, truth_list = make_records(args.records + 2 * args.new, args.seed)
    r = random.Random(args.seed)
    order = list(range(len(records)))
    r.shuffle(order)
    new_ids = set(order[: 2 * args.new])
    warm_ids = set(order[: args.new])
    truth = {
        f"{rec['source_system']}|{rec['source_patient_id']}": t
        for rec, t in zip(records, truth_list, strict=True)
    }
    first = [rec for i, rec in enumerate(records) if i not in new_ids]
    warm = [rec for i, rec in enumerate(records) if i in warm_ids]
    later = [rec for i, rec in enumerate(records) if i in new_ids and i not in warm_ids]
    print(f"generated {len(first):,} + {len(later):,} records in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip

    shutil.rmtree(args.workdir, ignore_errors=True)
    workspace = args.workdir / "ws"
    init_workspace(workspace, name="empi-bench")
    settings = open_workspace(workspace).settings
    settings.engine.memory_limit = args.memory_limit
    settings.empi.name_frequency_adjustment = args.name_frequency
    write_settings(workspace / "medlake.toml", settings)
    load(workspace, first)

    t = time.perf_counter()
    outcome = link_workspace(workspace)
    scratch = time.perf_counter() - t
    s = score(workspace, truth)
    print(f"from scratch: {len(first):,} records in {scratch:.1f} s "
          f"({ {k: round(v, 1) for k, v in outcome.seconds.items()} }); "
          f"pairs scored {outcome.pairs_scored:,}, persons {outcome.persons_after:,}, "
          f"review queue {outcome.review_queue:,}")  # fmt: skip
    print(f"  precision {s.precision:.5f} recall {s.recall:.5f} "
          f"({s.true_pairs:,} true pairs)")  # fmt: skip

    load(workspace, warm)
    t = time.perf_counter()
    link_workspace(workspace)
    print(f"first incremental batch ({len(warm):,} records): "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    load(workspace, later)
    t = time.perf_counter()
    outcome = link_workspace(workspace)
    incremental = time.perf_counter() - t
    s = score(workspace, truth)
    print(f"incremental: {len(later):,} new vs {len(first) + len(warm):,} in "
          f"{incremental:.1f} s "
          f"({ {k: round(v, 1) for k, v in outcome.seconds.items()} }); "
          f"moved {outcome.changes:,}, review queue {outcome.review_queue:,}")  # fmt: skip
    print(f"  precision {s.precision:.5f} recall {s.recall:.5f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS {peak:,.0f} MiB; targets: scratch ≤ 600 s "
        f"(ratio {scratch / 600:.2f}), incremental ≤ 30 s (ratio {incremental / 30:.2f})"
    )


if __name__ == "__main__":
    main()
