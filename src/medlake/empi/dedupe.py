"""Plain-file mode: deduplicate a table of people without a workspace.

The columns are named by *kind* (``given_name=first``, ``birth_date=dob``...); they are
turned into the same features the lake's linkage uses, the model is trained on the file
itself (EM, no labels), and records are clustered at the link threshold. The result is
``id,cluster_id``, where a cluster's id is the smallest record id in it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from medlake.empi import model as linkage_model
from medlake.empi.cluster import cluster, pair_edges
from medlake.empi.features import feature_table
from medlake.empi.linkage import linker_factory, predict_all, splink_api
from medlake.engine import Engine
from medlake.errors import UsageError

#: Kinds a column can be, and how each feeds the features.
FIELD_KINDS = (
    "given_name", "family_name", "full_name", "birth_date", "sex", "id_number", "phone",
    "address", "street_number", "suburb", "city", "postcode", "state", "email",
)  # fmt: skip
_ADDRESS_PARTS = ("street_number", "address", "suburb", "city", "state")


@dataclass(frozen=True)
class DedupeResult:
    ids: list[str]
    clusters: list[str]
    pairs_scored: int
    links: int

    @property
    def cluster_count(self) -> int:
        return len(set(self.clusters))


def records_from(table: pa.Table, id_column: str, fields: Mapping[str, str]) -> pa.Table:
    """Identity records (``unique_id`` + ``pii_person``-like columns) from a plain table."""
    for kind, column in fields.items():
        if kind not in FIELD_KINDS:
            raise UsageError(f"unknown field kind {kind!r}; one of {', '.join(FIELD_KINDS)}")
        if column not in table.column_names:
            raise UsageError(f"no column {column!r} in the file (for {kind})")
    if id_column not in table.column_names:
        raise UsageError(f"no id column {id_column!r} in the file")
    n = table.num_rows

    def values(kind: str) -> list[str | None]:
        column = fields.get(kind)
        if column is None:
            return [None] * n
        return [
            None if v is None else str(v).strip() or None for v in table.column(column).to_pylist()
        ]

    address_parts = [values(k) for k in _ADDRESS_PARTS if k in fields]
    addresses = [
        " ".join(p for p in parts if p) or None for parts in zip(*address_parts, strict=True)
    ] if address_parts else [None] * n  # fmt: skip
    births = [_date(v) for v in values("birth_date")]
    full = values("full_name")
    return pa.table(
        {
            "unique_id": [str(v) for v in table.column(id_column).to_pylist()],
            "name_hanzi": full,
            "name_pinyin": full,
            "family_name": values("family_name"),
            "given_name": values("given_name"),
            "birth_date": pa.array(births, pa.date32()),
            "sex": values("sex"),
            "resident_id": values("id_number"),
            "phone": values("phone"),
            "address": addresses,
            "postcode": values("postcode"),
            "email": values("email"),
        }
    )


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d/%m/%Y", "%Y.%m.%d"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def dedupe(
    engine: Engine, records: pa.Table, *, threshold: float, max_pairs: float
) -> DedupeResult:
    """Cluster ``records`` (from :func:`records_from`) on a scratch session of ``engine``."""
    features = feature_table(records)
    ids = features.column("unique_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise UsageError("the id column has repeated values")
    with splink_api(engine) as api:
        settings = linkage_model.train(linker_factory(api, features), max_pairs=max_pairs)
        pairs = predict_all(api, features, settings, threshold)
    index = {k: i for i, k in enumerate(ids)}
    edges = pair_edges(pairs, index)
    labels = cluster(len(ids), edges)
    smallest: dict[int, str] = {}
    for i, label in enumerate(labels):
        current = smallest.get(int(label))
        if current is None or _order(ids[i]) < _order(current):
            smallest[int(label)] = ids[i]
    return DedupeResult(ids, [smallest[int(label)] for label in labels], pairs.num_rows, len(edges))


def _order(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)
