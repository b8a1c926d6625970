"""Mapping rules compiled against a file's header into per-row cell getters.

:func:`compile_file` turns one :class:`~medlake.ingest.mapping_spec.FileMapping` and the
header the file actually has into :class:`CompiledFile`: for every staged column a
function from the row's cells to the staged value, which raises :class:`CellError`
(reason and source column) when the cell cannot be parsed or mapped, so the reader can
quarantine the row and go on. Work that does not depend on the row (column positions,
formats, constants, the vocabulary of code columns) is done once here; parsed dates are
memoised per getter, because exports repeat the same dates many times.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medlake.errors import InputError
from medlake.ingest.mapping_spec import (
    PATIENTS,
    ColumnRule,
    Constant,
    FileMapping,
    VersionRule,
    column_kinds,
)
from medlake.ingest.staging import CONCEPT_SLOTS, epoch_ms
from medlake.log import get_logger
from medlake.schema import table_spec

_log = get_logger(__name__)
Getter = Callable[[Sequence[str]], object]
_MEMO_LIMIT = 100_000  # distinct values memoised per date getter before the memo is reset


class CellError(ValueError):
    """A cell that cannot be parsed or mapped; ``field`` is the source column."""

    def __init__(self, reason: str, field: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class StagedField:
    """One staged column and how to get its value from a row's cells."""

    name: str
    get: Getter


@dataclass(frozen=True)
class CompiledFile:
    """A file entry bound to a header: id getters, version getter and staged fields."""

    entry: FileMapping
    width: int  # number of columns in the header
    record_id: Getter | None
    patient_id: Getter
    visit_id: Getter | None
    version: Getter | None
    fields: tuple[StagedField, ...]
    # code column -> (its ``_..._vocabulary`` column, the vocabulary id from the mapping)
    vocabularies: dict[str, tuple[str, str]]


class _Context:
    """What rule compilation needs: header positions, nulls, formats, the file's name."""

    def __init__(self, entry: FileMapping, header: Sequence[str], original_name: str) -> None:
        self.entry = entry
        self.positions = {name: i for i, name in enumerate(header)}
        self.nulls = frozenset(entry.null_values)
        self.original_name = original_name

    def position(self, column: str, *, required: bool, key: str) -> int | None:
        """Index of ``column`` in the header; a required column missing is an InputError."""
        if column in self.positions:
            return self.positions[column]
        if required:
            raise InputError(
                f"{self.original_name}: column {column!r} (needed for {key}) is not in the "
                f"header; header has {', '.join(self.positions) or 'no columns'}"
            )
        _log.warning("%s: column %r for %s is not in the header; left empty",
                     self.original_name, column, key)  # fmt: skip
        return None

    def cell(self, column: str, *, required: bool, key: str) -> Getter:
        """Getter of the stripped cell of ``column``, None when it is a null value."""
        index = self.position(column, required=required, key=key)
        nulls = self.nulls
        if index is None:
            return lambda cells: None

        def get(cells: Sequence[str]) -> str | None:
            value = cells[index].strip()
            return None if value in nulls else value

        return get

    def template(self, template: str, *, strict: bool, key: str) -> Getter:
        """Getter of a ``{COL}`` template (or a bare column name when it has no braces).

        ``strict`` (ids): every named cell must be present, else :class:`CellError`;
        otherwise empty cells print as nothing and an all-empty template is None.
        """
        parts = list(string.Formatter().parse(template))
        if all(name is None for _, name, _, _ in parts):
            column = template
            get = self.cell(column, required=True, key=key)
            if not strict:
                return get

            def get_strict(cells: Sequence[str]) -> str:
                value = get(cells)
                if value is None:
                    raise CellError(f"missing required field {column} ({key})", column)
                return value

            return get_strict
        pieces: list[tuple[str, str | None, Getter | None]] = []
        for literal, name, _, _ in parts:
            getter = None if name is None else self.cell(name, required=strict, key=key)
            pieces.append((literal, name, getter))

        def get_template(cells: Sequence[str]) -> str | None:
            out: list[str] = []
            found = False
            for literal, name, getter in pieces:
                out.append(literal)
                if getter is None:
                    continue
                value = getter(cells)
                if value is None:
                    if strict:
                        raise CellError(f"missing required field {name} ({key})", name)
                    continue
                found = True
                out.append(value)
            return "".join(out).strip() if found else None

        return get_template


def _date_parser(formats: list[str] | None, kind: str, column: str) -> Callable[[str], object]:
    """Parse a date/datetime with the given strptime formats (ISO 8601 when none), memoised."""
    memo: dict[str, object] = {}
    want_date = kind == "date"

    fast = [(_fixed_width_pattern(fmt), fmt) for fmt in formats or ()]

    def parse_one(text: str) -> dt.datetime:
        if not formats:
            return dt.datetime.fromisoformat(text)
        for pattern, fmt in fast:
            match = pattern.fullmatch(text) if pattern is not None else None
            try:
                if match is not None:  # same value as strptime, a tenth of the time
                    return dt.datetime(*map(int, match.groups()))  # type: ignore[arg-type]
                return dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
        raise ValueError(text)

    def parse(text: str) -> object:
        found = memo.get(text)
        if found is None:
            try:
                moment = parse_one(text)
                found = moment.date() if want_date else moment
            except ValueError:
                wanted = " or ".join(formats) if formats else "ISO 8601"
                found = CellError(f"unparseable date {text!r} (expected {wanted})", column)
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[text] = found
        if isinstance(found, CellError):
            raise found
        return found

    return parse


_FIXED_FIELDS = {"Y": r"(\d{4})", "m": r"(\d{2})", "d": r"(\d{2})", "H": r"(\d{2})",
                 "M": r"(\d{2})", "S": r"(\d{2})"}  # fmt: skip


def _fixed_width_pattern(fmt: str) -> re.Pattern[str] | None:
    """A regex for ``fmt`` when it has %Y, %m, %d[, %H, %M[, %S]] in that order, zero-padded.

    Text it matches is read by slicing; anything else (unpadded numbers, other
    directives) goes to :func:`datetime.strptime`, so results never differ.
    """
    parts = re.split(r"%(.)", fmt)
    directives = parts[1::2]
    if directives not in (list("Ymd"), list("YmdHM"), list("YmdHMS")):
        return None
    pattern = "".join(re.escape(p) if i % 2 == 0 else _FIXED_FIELDS[p] for i, p in enumerate(parts))
    return re.compile(pattern, re.ASCII)


def _number_parser(kind: str, column: str) -> Callable[[str], object]:
    def parse_integer(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if number.is_integer():
                return int(number)
            raise CellError(f"not an integer: {text!r}", column) from None

    def parse_float(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise CellError(f"not a number: {text!r}", column) from None

    return parse_integer if kind == "integer" else parse_float


def _converter(kind: str, formats: list[str] | None, column: str) -> Callable[[str], object] | None:
    """Parser from source text to the staged kind; None for strings (kept as they are)."""
    if kind in ("date", "datetime"):
        return _date_parser(formats, kind, column)
    if kind in ("integer", "float"):
        return _number_parser(kind, column)
    return None


def _as_list(value: str | list[str] | None) -> list[str] | None:
    return [value] if isinstance(value, str) else value


def _constant(value: Constant, kind: str, key: str) -> object:
    if isinstance(value, bool) or kind == "string":
        return str(value) if kind == "string" else value
    try:
        convert = _converter(kind, None, key)
        return convert(str(value)) if convert else value
    except CellError as exc:
        raise InputError(f"{key}: constant {value!r} does not fit a {kind} column") from exc


def _rule_getter(ctx: _Context, name: str, rule: ColumnRule, kind: str, required: bool) -> Getter:
    key = f"columns.{name}"
    if rule.value is not None:
        constant = _constant(rule.value, kind, key)
        return lambda cells: constant
    if rule.template is not None:
        source = rule.template
        raw = ctx.template(rule.template, strict=False, key=key)
        columns = [source]
    else:
        columns = _as_list(rule.column) or []
        source = columns[0]
        getters = [(c, ctx.cell(c, required=required, key=key)) for c in columns]

        def raw(cells: Sequence[str]) -> str | None:
            for _, get_cell in getters:
                value = get_cell(cells)
                if value is not None:
                    return value
            return None

    formats = _as_list(rule.format)
    converters: dict[str, Callable[[str], object] | None] = {}
    for column in columns:
        column_formats = formats or _as_list(ctx.entry.date_formats.get(column))
        converters[column] = _converter(kind, column_formats, column)
    mapping = rule.map
    has_default = rule.default is not None
    default = _constant(rule.default, kind, key) if has_default else None  # type: ignore[arg-type]
    mapped = {k: _constant(v, kind, key) for k, v in mapping.items()} if mapping else None
    days = (ctx.cell(rule.days_supply, required=required, key=key)
            if rule.days_supply else None)  # fmt: skip
    days_parse = _number_parser("integer", rule.days_supply or "")

    def which(cells: Sequence[str]) -> str:
        """The source column whose value was used (for error messages)."""
        if rule.template is not None or len(columns) == 1:
            return source
        for column, get in getters:
            if get(cells) is not None:
                return column
        return source

    single = converters[source] if len(columns) == 1 else None

    def get(cells: Sequence[str]) -> object:
        text = raw(cells)
        if text is None:
            if required:
                raise CellError(f"missing required field {source} ({name})", source)
            return None
        if mapped is not None:
            if text in mapped:
                return mapped[text]
            if has_default:
                return default
            raise CellError(f"value {text!r} is not in the value map of {name}", which(cells))
        convert = single if single is not None or len(columns) == 1 else converters[which(cells)]
        value = convert(text) if convert is not None else text
        if days is not None:
            supply = days(cells)
            if supply is not None:
                count = days_parse(supply)
                if not 0 < count < 100_000:
                    raise CellError(f"days supply {supply!r} out of range", rule.days_supply)
                value = value + dt.timedelta(days=count - 1)  # type: ignore[operator]
        return value

    return get


def _version_getter(ctx: _Context, rule: VersionRule) -> Getter:
    get = ctx.cell(rule.column, required=True, key="version")
    formats = _as_list(rule.format) or _as_list(ctx.entry.date_formats.get(rule.column))
    parse = _date_parser(formats, "datetime", rule.column)

    def version(cells: Sequence[str]) -> int:
        text = get(cells)
        if text is None:
            raise CellError(f"missing update time {rule.column} (version)", rule.column)
        if not formats and text.isdigit():
            return int(text)
        return epoch_ms(parse(text))  # type: ignore[arg-type]

    return version


def _as_rule(spec: ColumnRule | Constant) -> ColumnRule:
    """A bare string names a source column; any other bare value is a constant."""
    if isinstance(spec, ColumnRule):
        return spec
    return ColumnRule(column=spec) if isinstance(spec, str) else ColumnRule(value=spec)


def _required_columns(target: str) -> set[str]:
    if target == PATIENTS:
        return set()
    return {c.name for c in table_spec(target).columns if c.required}


def compile_file(entry: FileMapping, header: Sequence[str], original_name: str) -> CompiledFile:
    """Bind ``entry`` to ``header``: InputError when a required column is missing."""
    ctx = _Context(entry, header, original_name)
    kinds = column_kinds(entry.target)
    cdm_required = _required_columns(entry.target)
    fields: list[StagedField] = []
    vocabularies: dict[str, tuple[str, str]] = {}
    for name, spec in entry.columns.items():
        rule = _as_rule(spec)
        required = rule.required if rule.required is not None else name in cdm_required
        fields.append(StagedField(name, _rule_getter(ctx, name, rule, kinds[name], required)))
        if rule.vocabulary is not None:
            slot = next(s for s in CONCEPT_SLOTS[entry.target] if s.code_column == name)
            if slot.vocabulary_column not in entry.columns:
                vocabularies[name] = (slot.vocabulary_column, rule.vocabulary)
    return CompiledFile(
        entry=entry,
        width=len(header),
        record_id=(ctx.template(entry.record_id, strict=True, key="record_id")
                   if entry.record_id else None),
        patient_id=ctx.template(entry.patient_id, strict=True, key="patient_id"),
        visit_id=(ctx.template(entry.visit_id, strict=False, key="visit_id")
                  if entry.visit_id else None),
        version=_version_getter(ctx, entry.version) if entry.version else None,
        fields=tuple(fields),
        vocabularies=vocabularies,
    )  # fmt: skip
