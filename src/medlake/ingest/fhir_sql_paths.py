"""JSON paths of a FHIR resource as DuckDB SQL, for :mod:`medlake.ingest.fhir_sql`.

:class:`Paths` collects the elements a resource type's query reads and gives, for each,
SQL for its JSON type and its value, and predicates the SQL fast path uses to take a line
only when the Python mapper would read exactly the same values from it. The expressions
are placeholders until :meth:`Paths.resolve` knows every path: values come from one
``json_transform`` of the line (``JSON`` leaves), the types of elements with elements
below them from one ``json_type`` call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from medlake.ingest import fhir_values as v

NUMBER = r"-?[0-9]{1,15}(\.[0-9]{1,15})?"
ZONE = r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
DATE = rf"[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]{ZONE}?)?"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_case(expr: str, mapping: Mapping[str, object]) -> str:
    whens = " ".join(
        f"WHEN {sql_literal(k)} THEN {sql_literal(str(val))}" for k, val in mapping.items()
    )
    return f"(CASE {expr} {whens} END)"


def _segments(path: str) -> list[str]:
    """``$.a.b[0].c`` -> ``["a", "b", "[0]", "c"]``."""
    return re.findall(r"[^.\[\]$]+|\[\d*\]", path)


def _insert(node: dict, segments: list[str], leaf: str) -> None:
    head, rest = segments[0], segments[1:]
    if not rest:
        node[head] = leaf
        return
    if rest[0].startswith("["):  # a list: its elements share one structure
        element = node.setdefault(head, [{}])[0] if len(rest) > 1 else None
        if element is None:
            node[head] = [leaf]
        else:
            _insert(element, rest[1:], leaf)
        return
    _insert(node.setdefault(head, {}), rest, leaf)


def _access(path: str) -> str:
    """SQL reading ``path`` from the transformed line ``j``."""
    out = "j"
    for segment in _segments(path):
        out += f"[{int(segment[1:-1]) + 1}]" if segment.startswith("[") else f'."{segment}"'
    return out


def _kind(fragment: str) -> str:
    """The JSON type of a ``JSON`` leaf (NULL when absent), named as ``json_type`` names it."""
    first = f"left({fragment}, 1)"
    return (f"(CASE WHEN {fragment} IS NULL THEN NULL WHEN {first} = '\"' THEN 'VARCHAR' "
            f"WHEN {first} = '{{' THEN 'OBJECT' WHEN {first} = '[' THEN 'ARRAY' "
            f"WHEN {first} IN ('t', 'f') THEN 'BOOLEAN' WHEN {first} = 'n' THEN 'NULL' "
            f"WHEN regexp_matches({fragment}, '[.eE]') THEN 'DOUBLE' "
            f"WHEN {first} = '-' THEN 'BIGINT' ELSE 'UBIGINT' END)")


class Paths:
    """JSON paths read from each line, as SQL over one ``json_transform`` of the line.

    ``t(path)`` is the JSON type of the element (``VARCHAR``, ``OBJECT``, ``ARRAY``,
    ``UBIGINT``, ``BIGINT``, ``DOUBLE``, ``BOOLEAN``, ``NULL``; SQL NULL when absent) and
    ``s(path)`` its value as text. The expressions are placeholders until :meth:`resolve`
    knows every path: elements read as values (leaves) come from one ``json_transform``
    of the line with ``JSON`` leaves (a string's text is its quoted form with the quotes
    taken off: lines holding a backslash never get here); the type of an element that has
    elements below it comes from ``json_type`` (``json_transform`` turns a wrongly typed
    object into an object of NULLs, where the Python mapper would refuse it).
    """

    def __init__(self) -> None:
        self.paths: list[str] = []

    def _index(self, path: str) -> int:
        if path not in self.paths:
            self.paths.append(path)
        return self.paths.index(path)

    def t(self, path: str) -> str:
        return f"\x00T{self._index(path)}\x00"

    def s(self, path: str) -> str:
        return f"\x00S{self._index(path)}\x00"

    def resolve(self, sql: str) -> tuple[str, str, str, list[str]]:
        """``sql`` over the fragment columns ``f_i``; the SQL making them; the transform's
        structure; the paths whose type ``json_type`` gives (in ``ct``)."""
        collapsed = {path: re.sub(r"\[\d+\]", "[]", path) for path in self.paths}
        inner = set()
        for path in collapsed.values():
            for cut in re.finditer(r"[.\[]", path):
                if cut.start() > 1:
                    inner.add(path[: cut.start()])
        leaves = sorted({c for c in collapsed.values() if c not in inner})
        structure: dict = {}
        for leaf in leaves:
            _insert(structure, _segments(leaf), "JSON")
        typed = [path for path in self.paths if collapsed[path] in inner]
        fragments = [f"({_access(path)}::VARCHAR) AS f_{i}"
                     for i, path in enumerate(self.paths) if collapsed[path] not in inner]

        def expression(match: re.Match[str]) -> str:
            what, i = match.group(1), int(match.group(2))
            path = self.paths[i]
            if collapsed[path] in inner:  # its type only, from json_type
                t = f"ct[{typed.index(path) + 1}]"
                if what == "T":
                    return t
                if what == "M":
                    return f"{t} IS NULL"
                if what == "V":
                    return f"coalesce({t} = 'VARCHAR', false)"
                raise ValueError(f"{path} has elements below it: no value to read")
            f = f"f_{i}"
            if what == "T":
                return _kind(f)
            if what == "M":
                return f"{f} IS NULL"
            if what == "V":
                return f"coalesce(left({f}, 1) = '\"', false)"
            if what == "F":
                return f
            return f"(CASE WHEN left({f}, 1) = '\"' THEN {f}[2:-2] ELSE {f} END)"

        body = re.sub("\x00([TMVFS])(\\d+)\x00", expression, sql)
        return body, ", ".join(fragments), json.dumps(structure), typed

    # predicates -----------------------------------------------------------------------
    def missing(self, path: str) -> str:
        return f"(\x00M{self._index(path)}\x00)"

    def is_str(self, path: str) -> str:
        return f"(\x00V{self._index(path)}\x00)"

    def str_or_missing(self, path: str) -> str:
        return f"({self.missing(path)} OR {self.is_str(path)})"

    def nonempty(self, path: str) -> str:
        return f"({self.is_str(path)} AND {self.s(path)} <> '')"

    def number_or_missing(self, path: str) -> str:
        # A fragment that reads as a plain number is a JSON number (strings are quoted).
        return f"({self.missing(path)} OR regexp_full_match(\x00F{self._index(path)}\x00, " \
               f"'{NUMBER}'))"

    def date_ok(self, path: str) -> str:
        s = self.s(path)
        return (f"({self.is_str(path)} AND regexp_full_match({s}, '{DATE}') "
                f"AND left({s}, 4) <> '0000' AND try_cast(left({s}, 10) AS DATE) IS NOT NULL)")

    def date(self, path: str) -> str:
        return f"CAST(left({self.s(path)}, 10) AS DATE)"

    def datetime(self, path: str) -> str:
        s = self.s(path)
        return f"(CASE WHEN length({s}) > 10 THEN CAST(left({s}, 19) AS TIMESTAMP) END)"

    def reference_ok(self, path: str, kind: str) -> str:
        ref = f"{path}.reference"
        value, start = self.s(ref), len(kind) + 2
        return (f"({self.is_str(ref)} AND starts_with({value}, '{kind}/') AND "
                f"length({value}) >= {start} AND NOT contains(substr({value}, {start}), '/'))")

    def reference(self, path: str, kind: str) -> str:
        return f"substr({self.s(path + '.reference')}, {len(kind) + 2})"

    def optional_reference_ok(self, path: str, kind: str) -> str:
        return f"({self.missing(path)} OR {self.reference_ok(path, kind)})"

    def optional_reference(self, path: str, kind: str) -> str:
        return f"(CASE WHEN {self.t(path)} IS NOT NULL THEN {self.reference(path, kind)} END)"

    def code_ok(self, path: str, systems: Mapping[str, str]) -> str:
        """A CodeableConcept whose first coding has a known system and a code."""
        system = f"{path}.coding[0].system"
        known = ", ".join(sql_literal(uri) for uri in systems)
        return f"({self.is_str(system)} AND {self.s(system)} IN ({known}) " \
               f"AND {self.nonempty(path + '.coding[0].code')})"

    def code(self, path: str) -> str:
        return self.s(f"{path}.coding[0].code")

    def vocabulary(self, path: str, systems: Mapping[str, str]) -> str:
        # The system's URI: the writer's vocabulary ids are put in after the query
        # (SqlMapper: a lookup in Arrow costs less than a CASE over every system).
        del systems
        return self.s(f"{path}.coding[0].system")

    def quantity_ok(self, path: str) -> str:
        return (f"({self.t(path)} = 'OBJECT' AND {self.number_or_missing(path + '.value')} AND "
                + " AND ".join(self.str_or_missing(f"{path}.{k}")
                               for k in ("code", "unit", "system", "comparator")) + ")")

    def quantity(self, path: str) -> tuple[str, str, str, str]:
        """``(amount, unit, unit vocabulary, operator)`` SQL of a Quantity (as v.quantity)."""
        code, unit = self.s(path + ".code"), self.s(path + ".unit")
        has_code = f"coalesce({code} <> '', false)"
        return (
            f"CAST({self.s(path + '.value')} AS DOUBLE)",
            f"(CASE WHEN {has_code} THEN {code} ELSE nullif({unit}, '') END)",
            f"(CASE WHEN {has_code} THEN {self.s(path + '.system')} END)",
            f"CAST({sql_case(self.s(path + '.comparator'), v.OPERATORS)} AS BIGINT)",
        )

    def optional_code_ok(self, path: str) -> str:
        """Absent, text only, or one coding with a code: what v.optional_code reads plainly."""
        coding = f"{path}.coding"
        only_text = f"({self.missing(coding)} AND {self.str_or_missing(path + '.text')})"
        one = (f"({self.t(coding)} = 'ARRAY' AND {self.missing(coding + '[1]')} AND "
               f"{self.nonempty(coding + '[0].code')} AND "
               f"{self.str_or_missing(coding + '[0].system')})")
        return f"({self.missing(path)} OR ({self.t(path)} = 'OBJECT' AND ({only_text} OR {one})))"

    def optional_code(self, path: str) -> tuple[str, str]:
        coding = f"{path}.coding"
        return (
            f"(CASE WHEN {self.t(coding)} IS NULL THEN nullif({self.s(path + '.text')}, '') "
            f"ELSE {self.s(coding + '[0].code')} END)",
            f"(CASE WHEN {self.t(coding)} IS NOT NULL "
            f"THEN {self.s(coding + '[0].system')} END)",
        )

    def range_kind(self, path: str) -> str:
        """How v.reference_range reads a referenceRange: none, lt, gt, range; NULL: not here."""
        first, text = f"{path}[0]", self.s(f"{path}[0].text")
        n = r"[0-9]+(\.[0-9]+)?"
        by_text = (
            f"(CASE WHEN {text} IS NULL THEN 'none' "
            f"WHEN regexp_full_match({text}, '<=?{n}') THEN 'lt' "
            f"WHEN regexp_full_match({text}, '>=?{n}') THEN 'gt' "
            f"WHEN regexp_full_match({text}, '{n}-{n}') THEN 'range' "
            f"WHEN NOT starts_with({text}, '<') AND NOT starts_with({text}, '>') "
            f"AND NOT contains({text}, '-') THEN 'none' END)"
        )
        plain = (f"({self.t(first)} = 'OBJECT' AND {self.missing(first + '.low')} AND "
                 f"{self.missing(first + '.high')} AND {self.str_or_missing(first + '.text')})")
        return (f"(CASE WHEN {self.t(path)} IS NULL THEN 'none' "
                f"WHEN {self.t(path)} = 'ARRAY' AND {self.missing(first)} THEN 'none' "
                f"WHEN {self.t(path)} = 'ARRAY' AND {plain} THEN {by_text} END)")

    def range_values(self, path: str, kind: str) -> tuple[str, str]:
        text = self.s(f"{path}[0].text")
        number = f"CAST(ltrim({text}, '<>=') AS DOUBLE)"
        low = (f"(CASE {kind} WHEN 'gt' THEN {number} "
               f"WHEN 'range' THEN CAST(split_part({text}, '-', 1) AS DOUBLE) END)")
        high = (f"(CASE {kind} WHEN 'lt' THEN {number} "
                f"WHEN 'range' THEN CAST(split_part({text}, '-', 2) AS DOUBLE) END)")
        return low, high
