"""The mapping file: how one source system's CSV exports become staged CDM rows.

A hospital data engineer writes one mapping file (TOML or YAML) per source system: for each
export file (matched by a file-name glob) it says how to read the file (encoding,
delimiter, header row), which CDM table it feeds, where the record, patient and visit
ids come from, and, staged column by staged column, which source column (or constant,
template, value map) fills it. ``docs/mapping.md`` documents the format with the
synthetic HIS as the worked example.

The file is validated here with Pydantic, against the staging contract
(:mod:`medlake.ingest.staging`): an unknown target table or staged column, a
vocabulary on a column that holds no code, a rule naming no source are refused before
any row is read, with the mapping file and the key path in the message
(``his.toml: file[2].columns.visit_start_dat: ...``).
"""

from __future__ import annotations

import difflib
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medlake.errors import InputError
from medlake.ingest.staging import (
    CONCEPT_SLOTS,
    PATIENT_COLUMNS,
    PROVENANCE_TYPES,
    STAGEABLE_TABLES,
    staging_schema,
)
from medlake.schema import table_spec

Encoding = Literal["utf-8", "utf-8-sig", "gbk", "gb18030"]
#: The target name for patient identity rows (``ParsedChunk.patients``).
PATIENTS = "patients"
Constant = str | int | float | bool
YAML_SUFFIXES = (".yaml", ".yml")
_FILE_LEVEL_DEFAULTS = ("encoding", "delimiter", "quote", "header_row", "null_values")


def template_fields(template: str) -> list[str]:
    """Source columns named in a ``{COL}`` template, in order (``[]`` for a plain name)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from exc


class ColumnRule(BaseModel):
    """How one staged column is filled. Exactly one of ``column``, ``value``, ``template``.

    ``column`` may list several source columns: the first non-empty one is used
    (``["CYRQ", "JZRQ"]``: discharge date, else the visit date).
    """

    model_config = ConfigDict(extra="forbid")

    column: str | list[str] | None = None
    value: Constant | None = None
    template: str | None = None
    format: str | list[str] | None = None  # strptime formats for dates and datetimes
    map: dict[str, Constant] | None = None  # value map: source value -> staged value
    default: Constant | None = None  # for values not in ``map`` (else: quarantine)
    vocabulary: str | None = None  # for a code column: the vocabulary id (ICD10CM, ATC...)
    required: bool | None = None  # default: required when the CDM column is
    days_supply: str | None = None  # end date = this date + (days supply - 1) days

    @model_validator(mode="after")
    def _one_source(self) -> ColumnRule:
        given = [k for k in ("column", "value", "template") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of column, value, template (got {given or 'none'})")
        if self.default is not None and self.map is None:
            raise ValueError("default is only for values not in map; there is no map")
        if self.template is not None:
            template_fields(self.template)
        return self

    def source_columns(self) -> list[str]:
        """Every source column this rule reads."""
        names: list[str] = []
        if isinstance(self.column, str):
            names.append(self.column)
        elif self.column:
            names.extend(self.column)
        if self.template is not None:
            names.extend(template_fields(self.template))
        if self.days_supply:
            names.append(self.days_supply)
        return names


class VersionRule(BaseModel):
    """The source's update-time column: a newer time replaces the older version."""

    model_config = ConfigDict(extra="forbid")

    column: str
    format: str | list[str] | None = None  # none: ISO 8601, or epoch milliseconds if digits


RuleValue = Annotated[ColumnRule | Constant, Field(union_mode="left_to_right")]


def _kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "datetime"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "float"
    return "string"


def column_kinds(target: str) -> dict[str, str]:
    """Staged columns a mapping may fill for ``target``: date, datetime, integer, float, string."""
    if target == PATIENTS:
        return {n: _kind(t) for n, t in PATIENT_COLUMNS.items() if n not in PROVENANCE_TYPES}
    derived = {STAGEABLE_TABLES[target], "person_id", "visit_occurrence_id"}
    names = [c.name for c in table_spec(target).columns if c.name not in derived]
    names += [slot.vocabulary_column for slot in CONCEPT_SLOTS.get(target, ())]
    return {f.name: _kind(f.type) for f in staging_schema(target, names)}


class FileMapping(BaseModel):
    """One export file: how to read it, which table it feeds, column by column."""

    model_config = ConfigDict(extra="forbid")

    match: str | list[str]  # file-name globs: "patients.csv", "*处方*.csv"
    target: str  # "patients" or a CDM table a reader may stage
    encoding: Encoding = "utf-8"
    delimiter: str = ","
    quote: str = '"'
    header_row: int = Field(1, ge=0)  # 1-based line of the header; 0: no header
    header: list[str] | None = None  # column names when header_row is 0
    sheet: str | None = None  # Excel worksheet to read (default: the first)
    null_values: list[str] = [""]
    record_id: str | None = None  # column name or template "{JZH}/{ZDXH}"
    patient_id: str  # column name or template
    visit_id: str | None = None  # column name or template
    visit_system: str | None = None  # when the visit id belongs to another system
    version: VersionRule | None = None
    date_formats: dict[str, str | list[str]] = {}  # source column -> strptime format(s)
    columns: dict[str, RuleValue] = {}

    @field_validator("target")
    @classmethod
    def _known_target(cls, target: str) -> str:
        if target == "patient":
            return PATIENTS
        if target != PATIENTS and target not in STAGEABLE_TABLES:
            known = [PATIENTS, *STAGEABLE_TABLES]
            raise ValueError(f"unknown target {target!r}; one of {', '.join(known)}")
        return target

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if value == "\\t":
            return "\t"
        if len(value) != 1:
            raise ValueError(f"must be one character, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fits_the_target(self) -> FileMapping:
        if self.header_row == 0 and not self.header:
            raise ValueError("header_row = 0 needs header = [column names]")
        if self.target != PATIENTS and self.record_id is None:
            raise ValueError(f"record_id is required for target {self.target}")
        for key in ("record_id", "patient_id", "visit_id"):
            template = getattr(self, key)
            if template is not None:
                try:
                    template_fields(template)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        allowed = column_kinds(self.target)
        slots = {s.code_column for s in CONCEPT_SLOTS.get(self.target, ())}
        for name, rule in self.columns.items():
            if name not in allowed:
                close = difflib.get_close_matches(name, list(allowed), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"columns.{name}: not a column of {self.target}{hint}")
            if isinstance(rule, ColumnRule):
                if rule.vocabulary is not None and name not in slots:
                    raise ValueError(f"columns.{name}: vocabulary is only for code columns "
                                     f"({', '.join(sorted(slots)) or 'none here'})")  # fmt: skip
                if rule.days_supply is not None and allowed[name] not in ("date", "datetime"):
                    raise ValueError(f"columns.{name}: days_supply is only for dates")
        return self

    def patterns(self) -> list[str]:
        return [self.match] if isinstance(self.match, str) else list(self.match)


class MappingDefaults(BaseModel):
    """Settings every file entry takes unless it says otherwise."""

    model_config = ConfigDict(extra="forbid")

    encoding: Encoding | None = None
    delimiter: str | None = None
    quote: str | None = None
    header_row: int | None = None
    null_values: list[str] | None = None
    date_formats: dict[str, str | list[str]] = {}


class MappingSpec(BaseModel):
    """A whole mapping file: one source system's exports."""

    model_config = ConfigDict(extra="forbid")

    source_system: str | None = None  # informational: the system these exports come from
    description: str | None = None
    defaults: MappingDefaults = MappingDefaults()
    file: list[FileMapping] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("file"), list):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            return data
        files = []
        for entry in data["file"]:
            if isinstance(entry, dict):
                merged = {k: defaults[k] for k in _FILE_LEVEL_DEFAULTS if k in defaults}
                merged.update(entry)
                formats = defaults.get("date_formats")
                if isinstance(formats, dict):
                    merged["date_formats"] = {**formats, **(entry.get("date_formats") or {})}
                entry = merged
            files.append(entry)
        return {**data, "file": files}


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("ColumnRule", "str", "int", "float", "bool") or "[" in item:
            continue  # pydantic's union-member tags, not keys of the file
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts) or "(top level)"


def parse_mapping(data: dict[str, Any], source: str) -> MappingSpec:
    """Validate parsed TOML; :class:`InputError` names ``source`` and each bad key path."""
    try:
        return MappingSpec.model_validate(data)
    except ValidationError as exc:
        seen: dict[str, str] = {}
        for error in exc.errors():
            key = _key_path(tuple(error["loc"]))
            message = str(error["msg"]).removeprefix("Value error, ")
            seen.setdefault(key, message)
        lines = [f"{key}: {message}" for key, message in seen.items()]
        raise InputError(f"mapping {source}: " + "; ".join(lines)) from None


def load_mapping(path: Path) -> MappingSpec:
    """Read and validate the mapping file at ``path``: YAML (``.yaml``/``.yml``) or TOML.

    Both spell the same document (docs/mapping.md); YAML is read with PyYAML's safe
    loader, so a mapping file can hold data but never construct Python objects.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"mapping {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"mapping {path}: not UTF-8 text") from None
    if path.suffix.lower() in YAML_SUFFIXES:
        import yaml  # only for YAML mappings

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"mapping {path}: not valid YAML ({_one_line(exc)})") from None
        if not isinstance(data, dict):
            raise InputError(f"mapping {path}: a YAML mapping file is a mapping at the top level")
        return parse_mapping(data, str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"mapping {path}: not valid TOML ({exc})") from None
    return parse_mapping(data, str(path))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
