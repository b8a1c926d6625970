"""The scale-out engine: the lake as Parquet tables in a Spark warehouse directory.

Spark runs the same Ibis expressions as DuckDB when the data outgrows one machine. It
has no multi-statement transactions, so :class:`SparkEngine` is not
:class:`~medlake.engine.base.SupportsTransactions`. Tables are Parquet tables in
``warehouse_dir``; Spark's in-memory catalog forgets them when the session ends, so on
start the engine registers every table directory already in the warehouse again.

Spark drops ``NOT NULL`` on Parquet tables; required columns are still checked by
:meth:`~medlake.engine.Engine.load_arrow` (from the table specs given to
``create_schema``), so loads behave as on DuckDB.

The engine is :class:`~medlake.engine.base.SupportsSplink`: the EMPI's record linkage
runs with Splink's ``SparkAPI`` on the engine's own session. Splink's string
similarities on Spark (``jaro_winkler``, ``damerau_levenshtein``) are Scala UDFs in a jar
that ships inside the installed ``splink`` package; the session is started with that jar
on its class path (``spark.jars``, read from the package, no download), and the API
registers the functions.

Only this module imports PySpark; without it, opening a Spark engine raises
:class:`~medlake.errors.MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import sqlglot.expressions as sge

from medlake.engine.base import Engine
from medlake.engine.capabilities import SupportsSplink
from medlake.engine.ddl import drop_table_statement, table_ref
from medlake.errors import EngineCapabilityError, EngineError, MissingDependencyError
from medlake.log import get_logger

try:
    import pyspark
    from pyspark.logger import PySparkLogger
    from pyspark.sql import SparkSession
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "the Spark engine needs PySpark and Java 17+: pip install 'medlake[spark]'"
    ) from exc

logger = get_logger(__name__)

# Spark's default log4j profile prints INFO lines at start-up, before setLogLevel can
# run; this one keeps the JVM to warnings and errors from the first line.
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = error
# Loading Arrow data from the driver ships it inside tasks, which this warns about.
logger.tasks.name = org.apache.spark.scheduler.TaskSetManager
logger.tasks.level = error
# Splink registers its similarity UDFs on every API it makes (warns they are replaced),
# and reads back scratch results that are empty (warns no file matched).
logger.udfs.name = org.apache.spark.sql.catalyst.analysis.SimpleFunctionRegistry
logger.udfs.level = error
logger.sources.name = org.apache.spark.sql.execution.datasources.DataSource
logger.sources.level = error
"""

# Directory names in the warehouse that are not tables (hidden, or Spark's markers).
_NOT_A_TABLE_PREFIXES = (".", "_")
# Staging tables of delete_where; one left behind means a delete was interrupted.
_STAGE_PREFIX = "medlake_stage_"
# Splink's intermediate results are written under this warehouse folder (the leading
# underscore keeps start-up from taking it for a table), one folder per linkage.
_SPLINK_SCRATCH = "_splink_scratch"
# Splink names every table it makes (temporary views here) with this prefix.
_SPLINK_PREFIX = "__splink__"

# Engines open per warehouse in this process: they share its one session.
_sessions_open: dict[Path, int] = {}
_sessions_lock = threading.Lock()


class SparkEngine(Engine, SupportsSplink):
    """The lake as Parquet tables in a Spark warehouse (local mode or a cluster).

    One SparkSession exists per process: opening a second engine with another
    warehouse while one is running is an error. Engines on the same warehouse share
    the session, which stops when the last of them closes.
    """

    kind: ClassVar[str] = "spark"
    sql_dialect: ClassVar[str] = "spark"

    def __init__(
        self,
        master: str = "local[*]",
        warehouse_dir: Path = Path("spark-warehouse"),
        app_name: str = "medlake",
        *,
        shuffle_partitions: int | None = None,
        load_chunk_rows: int = 500_000,
        conf: Mapping[str, str] | None = None,
    ) -> None:
        self.warehouse_dir = Path(warehouse_dir).expanduser().resolve()
        self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        self._load_chunk_rows = load_chunk_rows
        with _sessions_lock:
            self._session = _start_session(
                master, self.warehouse_dir, app_name, shuffle_partitions, dict(conf or {})
            )
            _sessions_open[self.warehouse_dir] = _sessions_open.get(self.warehouse_dir, 0) + 1
        super().__init__(ibis.pyspark.connect(self._session))
        self._attach_warehouse_tables()

    def __repr__(self) -> str:
        return f"<SparkEngine {self.warehouse_dir}>"

    # ------------------------------------------------------------------ statements

    def _table_properties(self) -> list[sge.Expression]:
        return [sge.FileFormatProperty(this=sge.var("PARQUET"))]

    def _run_statement(self, sql: str, *, returns_rows: bool) -> pa.Table | None:
        frame = self._session.sql(sql)  # commands (DDL, INSERT) run right here
        return frame.toArrow() if returns_rows else None

    def _table_created(self, name: str) -> None:
        # A table's schema lives only in the session's catalog until a file is written;
        # an empty Parquet file keeps it, so an empty table survives a restart.
        self._session.table(name).limit(0).write.insertInto(name)

    def _list_tables(self) -> list[str]:
        # SHOW TABLES reads only the catalog; catalog.listTables() also loads each
        # table's metadata, seconds for a full schema.
        rows = self._session.sql("SHOW TABLES").collect()
        return [row.tableName for row in rows if not row.isTemporary]

    def _drop_table(self, name: str, statement: str) -> None:
        self._run_statement(statement, returns_rows=False)
        # Tables registered from the warehouse on start-up are external to Spark: their
        # files outlive DROP TABLE, and would come back on the next start.
        leftover = self.warehouse_dir / name.lower()
        if leftover.is_dir():
            shutil.rmtree(leftover)

    # ------------------------------------------------------------------ writing

    def _insert_batches(
        self, table: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> None:
        # Each append is a Spark job with fixed overhead; gather batches into chunks
        # large enough to amortize it, small enough to bound the driver's memory.
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= self._load_chunk_rows:
                self._append(table, schema, pending)
                pending, rows = [], 0
        if rows:
            self._append(table, schema, pending)

    def _append(self, table: str, schema: pa.Schema, batches: list[pa.RecordBatch]) -> None:
        data = pa.Table.from_batches(batches, schema=schema)
        # insertInto matches by position: the batches are in the table's column order.
        self._session.createDataFrame(data).write.insertInto(table)

    def _delete_where(self, table: str, predicate: ir.BooleanValue) -> int:
        # Parquet tables have no DELETE; rewrite the table with the rows to keep, staged
        # in a table of their own because Spark cannot overwrite what it is reading.
        source = self._backend.table(table)
        doomed = int(self._execute_arrow(source.filter(predicate).count().as_table())[0][0].as_py())
        if not doomed:
            return 0
        keep = source.filter(~predicate.fill_null(False))
        self._backend._run_pre_execute_hooks(keep)  # type: ignore[attr-defined]
        # No leading underscore: Hadoop would take the table's directory for a hidden one.
        stage = f"{_STAGE_PREFIX}{uuid.uuid4().hex}"
        self._session.sql(str(self._backend.compile(keep))).write.saveAsTable(
            stage, format="parquet"
        )
        try:
            self._session.table(stage).write.insertInto(table, overwrite=True)
        finally:
            self._session.sql(drop_table_statement(stage, dialect="spark"))
        return doomed

    # ------------------------------------------------------------------ reading

    def _execute_arrow(self, expr: ir.Table) -> pa.Table:
        # Ibis's own to_pyarrow goes through pandas; Spark 4 hands Arrow over directly.
        self._backend._run_pre_execute_hooks(expr)  # type: ignore[attr-defined]
        result = self._session.sql(str(self._backend.compile(expr))).toArrow()
        target = pa.schema([f.with_nullable(True) for f in expr.schema().to_pyarrow()])
        # Timestamps arrive tagged UTC (the session zone); the lake's are zone-less.
        return result.rename_columns(target.names).cast(target)

    def _stream_batches(self, expr: ir.Table, batch_size: int) -> Iterator[pa.RecordBatch]:
        # The result is collected to the driver, then handed out in batches.
        return iter(self._execute_arrow(expr).to_batches(max_chunksize=batch_size))

    def _close(self) -> None:
        with _sessions_lock:
            _sessions_open[self.warehouse_dir] -= 1
            if _sessions_open[self.warehouse_dir] == 0:
                self._session.stop()

    # ------------------------------------------------------------------ splink

    @contextlib.contextmanager
    def splink_api(self) -> Iterator[Any]:
        """Splink's ``SparkAPI`` on the engine's session.

        Splink's tables are temporary views of this session (never in the lake's
        catalog); the results it materializes to break Spark's lineage are Parquet
        files in a scratch folder of the warehouse (shared storage on a cluster). The
        views and the folder are removed when the block ends.
        """
        if _splink_jar() is None:
            raise EngineCapabilityError(
                "Splink's similarity functions for Spark (its bundled scala-udf-similarity "
                f"jar for Spark {pyspark.__version__}) were not found in the installed splink",
                engine=self.kind,
            )
        from splink import SparkAPI

        scratch = self.warehouse_dir / _SPLINK_SCRATCH / uuid.uuid4().hex
        scratch.mkdir(parents=True)
        self._session.sparkContext.setCheckpointDir(str(scratch))
        try:
            # Registering the UDFs again is cheap; a second API in the session reuses them.
            yield SparkAPI(spark_session=self._session, break_lineage_method="parquet")
        finally:
            try:
                for row in self._session.sql("SHOW TABLES").collect():
                    if row.isTemporary and row.tableName.startswith(_SPLINK_PREFIX):
                        self._session.catalog.dropTempView(row.tableName)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    # ------------------------------------------------------------------ start-up

    def _attach_warehouse_tables(self) -> None:
        """Register the warehouse's table directories that the catalog does not know."""
        known = {name.lower() for name in self._list_tables()}
        for directory in sorted(self.warehouse_dir.iterdir()):
            name = directory.name
            if not directory.is_dir() or name.startswith(_NOT_A_TABLE_PREFIXES) or name in known:
                continue
            if name.startswith(_STAGE_PREFIX):
                logger.warning("spark: %s is left from an interrupted delete_where", directory)
                continue
            if not any(directory.rglob("*.parquet")):
                # A table created and never loaded leaves an empty directory, which
                # would block creating it again; it holds no data to keep.
                if not any(
                    path.is_file() and not path.name.startswith(_NOT_A_TABLE_PREFIXES)
                    for path in directory.rglob("*")
                ):
                    shutil.rmtree(directory)
                continue
            statement = sge.Create(
                kind="TABLE",
                this=table_ref(name),
                exists=True,
                properties=sge.Properties(
                    expressions=[
                        sge.FileFormatProperty(this=sge.var("PARQUET")),
                        sge.LocationProperty(this=sge.Literal.string(str(directory))),
                    ]
                ),
            ).sql(dialect="spark")
            try:
                self._session.sql(statement)
            except Exception as exc:
                raise EngineError(
                    f"cannot register table directory {directory}: {exc}",
                    statement=statement,
                    engine=self.kind,
                ) from exc
            logger.debug("spark: registered %s from the warehouse", name)


def _start_session(
    master: str,
    warehouse_dir: Path,
    app_name: str,
    shuffle_partitions: int | None,
    conf: dict[str, str],
) -> SparkSession:
    active = SparkSession.getActiveSession()
    if active is not None:
        current = active.conf.get("spark.sql.warehouse.dir") or ""
        if Path(current.removeprefix("file:")).resolve() != warehouse_dir:
            raise EngineError(
                f"a Spark session with warehouse {current} is already running in this "
                f"process; close its engine before opening {warehouse_dir}",
                engine="spark",
            )
    local = master.startswith("local")
    if local:
        # Spark otherwise warns at every start that the hostname resolves to loopback.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings = {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.sql.warehouse.dir": str(warehouse_dir),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # 200 shuffle partitions (the default) is for clusters; locally it only adds
        # scheduling overhead to every join and group-by.
        "spark.sql.shuffle.partitions": str(shuffle_partitions or (8 if local else 200)),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.default": "parquet",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={_log4j2_file()}",
        **conf,
    }
    jar = _splink_jar()
    if jar is not None:
        # Class-path jars are fixed when the JVM starts: Splink cannot add its own later.
        settings["spark.jars"] = ",".join(filter(None, [conf.get("spark.jars"), str(jar)]))
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        raise EngineError(
            f"cannot start Spark ({master}); is Java 17 or newer installed? {exc}", engine="spark"
        ) from exc
    session.sparkContext.setLogLevel("WARN")
    # PySpark logs every failed query with its whole JVM stack before raising it; the
    # engine raises it as an EngineError already, once.
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)
    return session


def _splink_jar() -> Path | None:
    """The similarity-UDF jar bundled with the installed Splink for this Spark's major
    version (newest if several), found without importing Splink (a quarter second)."""
    spec = importlib.util.find_spec("splink")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "internals/files/spark_jars"
    major = pyspark.__version__.split(".")[0]
    pattern = re.compile(rf"scala-udf-similarity-([\d.]+)_spark{major}\.x\.jar")
    found = []
    for jar in folder.glob("*.jar"):
        match = pattern.fullmatch(jar.name)
        if match:
            found.append((tuple(int(x) for x in match.group(1).split(".") if x), jar))
    return max(found)[1] if found else None


def _log4j2_file() -> Path:
    path = Path(tempfile.gettempdir()) / "medlake-spark-log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J2:
        path.write_text(_LOG4J2)
    return path
