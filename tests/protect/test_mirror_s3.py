"""The landing mirror on an S3-compatible object store, reached through fsspec (s3fs).

The store is a real HTTP server on the loopback: moto's standalone S3 server, started
here as its own process. Its content is checked with boto3, an S3 client independent of
the code under test. Faults are real: the server is killed in the middle of an ingest
(and comes back empty, as a store that lost its disks), objects are overwritten with
bit-flipped bytes behind medlake's back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from tests.protect.conftest import hospital_inputs, hospital_options

import medlake.service.ingest as ingest_service
from medlake.audit import read_events
from medlake.config import open_workspace, write_settings
from medlake.ingest.landing import LandingStore, land_bytes, landed_path
from medlake.ingest.landing_mirror import file_sha256, landed_names, verified_path
from medlake.service import mirror
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import open_lake

BUCKET = "medlake-landing"
CREDENTIALS = {"key": "testing", "secret": "testing"}


class S3Server:
    """moto's S3 server on a free loopback port; ``stop()`` kills it, ``start()`` again."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"moto server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self):  # boto3 generates its client type
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def storage_options(self) -> dict[str, object]:
        return {
            **CREDENTIALS,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
            # A store that is down fails its side quickly rather than after minutes.
            "config_kwargs": {"connect_timeout": 2, "retries": {"max_attempts": 2}},
        }

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under ``prefix`` (name → bytes), read with boto3."""
        s3 = self.client()
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
        return {
            item["Key"].rsplit("/", 1)[-1]: s3.get_object(Bucket=BUCKET, Key=item["Key"])[
                "Body"
            ].read()
            for item in listed
        }


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "server.log")
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_workspace(
    empty_workspace: Path, tmp_path: Path, s3: S3Server, request: pytest.FixtureRequest
) -> Callable[[], tuple[Path, str]]:
    """A fresh workspace whose landing is mirrored to ``s3://<bucket>/<test name>``."""

    def make() -> tuple[Path, str]:
        root = tmp_path / "ws"
        shutil.copytree(empty_workspace, root)
        prefix = request.node.name.replace("[", "-").replace("]", "")
        workspace = open_workspace(root)
        settings = workspace.settings.model_copy(deep=True)
        settings.paths.landing_mirror = f"s3://{BUCKET}/{prefix}"
        settings.mirror.storage_options = s3.storage_options()  # type: ignore[assignment]
        write_settings(workspace.settings_file, settings)
        return root, prefix

    return make


def _batches(root: Path) -> set[str]:
    with open_lake(open_workspace(root)) as engine:
        return set(engine.execute(engine.table("ingest_batch")).column("landed_sha256").to_pylist())


def _events(root: Path, action: str) -> list[str]:
    with open_lake(open_workspace(root)) as engine:
        return [e.object_id for e in read_events(engine) if e.action == action]


def _assert_identical(root: Path, objects: dict[str, bytes]) -> None:
    """The bucket holds exactly the primary's landed files, each byte for byte."""
    primary = open_workspace(root).landing_dir
    assert set(objects) == landed_names(primary)
    for name, data in objects.items():
        assert hashlib.sha256(data).hexdigest() == name
        assert landed_path(primary, name).read_bytes() == data


def test_landing_returns_only_once_the_object_is_in_the_store(tmp_path: Path, s3: S3Server) -> None:
    store = LandingStore(
        tmp_path / "primary",
        f"s3://{BUCKET}/direct",
        state_file=tmp_path / "state.json",
        storage_options=s3.storage_options(),
    )
    (tmp_path / "primary").mkdir()
    message = b"MSH|^~\\&|LIS|H|||20260101||ORU^R01|1|P|2.5"
    landed = land_bytes(message, store)
    digest = hashlib.sha256(message).hexdigest()
    assert s3.objects("direct") == {digest: message}  # read back by another client
    assert landed.path == landed_path(tmp_path / "primary", digest)
    assert not landed.degraded
    assert land_bytes(message, store).already_present


def test_a_file_url_mirror_is_a_local_folder_fsynced_like_one(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store = LandingStore(tmp_path / "a", f"file://{tmp_path / 'b'}")
    assert store.side("mirror").root == tmp_path / "b"
    land_bytes(b"x", store)
    assert (
        landed_names(tmp_path / "a")
        == landed_names(tmp_path / "b")
        == {hashlib.sha256(b"x").hexdigest()}
    )


@pytest.mark.slow
def test_store_killed_mid_ingest_degrades_then_resync_makes_both_sides_identical(
    s3_workspace: Callable[[], tuple[Path, str]],
    s3: S3Server,
    small_hospital: Path,
    empty_workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, prefix = s3_workspace()
    reference = tmp_path / "reference"
    shutil.copytree(empty_workspace, reference)
    inputs, options = hospital_inputs(small_hospital), hospital_options(small_hospital)
    ingest_paths(reference, inputs, options=options)

    opened: Counter[str] = Counter()

    def kill_before_the_third_upload(side: str, step: str) -> None:
        if side == "mirror" and step == "open":
            opened[side] += 1
            if opened[side] == 3:
                s3.stop()

    monkeypatch.setattr(
        ingest_service,
        "landing_store",
        lambda ws: mirror.landing_store(ws, fault=kill_before_the_third_upload),
    )
    try:
        report = ingest_paths(root, inputs, options=options)
    finally:
        if s3.process is None:
            s3.start()  # the store comes back, empty: it lost everything
            s3.client().create_bucket(Bucket=BUCKET)
    assert not report.failed
    assert _batches(root) == _batches(reference)  # nothing refused, nothing lost
    sides = {s.name: s for s in mirror.status(root)}
    assert sides["mirror"].status == "degraded"
    assert sides["mirror"].reason
    assert sides["primary"].status == "ok"
    assert _events(root, "mirror.degraded") == ["mirror"]

    resynced = mirror.resync_mirror(root)
    assert not resynced.lost
    assert resynced.copied == {"mirror": len(landed_names(open_workspace(root).landing_dir))}
    _assert_identical(root, s3.objects(prefix))
    assert {s.status for s in mirror.status(root)} == {"ok"}
    assert {s.missing for s in mirror.status(root)} == {0}


@pytest.mark.slow
def test_overwritten_objects_are_passed_over_on_read_and_repaired_by_resync(
    s3_workspace: Callable[[], tuple[Path, str]], s3: S3Server, small_hospital: Path
) -> None:
    root, prefix = s3_workspace()
    report = ingest_paths(root, [small_hospital / "emr"])
    assert not report.failed
    _assert_identical(root, s3.objects(prefix))
    store = mirror.landing_store(open_workspace(root))
    primary = open_workspace(root).landing_dir
    flipped_in_store, flipped_on_disk = sorted(landed_names(primary))[:2]

    # A bit flipped in an object, rewritten in place with another client.
    data = bytearray(s3.objects(prefix)[flipped_in_store])
    data[len(data) // 2] ^= 0x01
    key = f"{prefix}/{flipped_in_store[:2]}/{flipped_in_store}"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    # And a bit flipped on the primary disk: the store's copy is then the good one.
    path = landed_path(primary, flipped_on_disk)
    os.chmod(path, 0o644)
    local = bytearray(path.read_bytes())
    local[0] ^= 0x80
    path.write_bytes(bytes(local))

    assert verified_path(store, flipped_in_store) == landed_path(primary, flipped_in_store)
    fetched = verified_path(store, flipped_on_disk)
    assert fetched != path
    assert file_sha256(fetched) == flipped_on_disk

    resynced = mirror.resync_mirror(root)
    assert resynced.repaired == {"mirror": 1, "primary": 1}
    assert not resynced.lost
    _assert_identical(root, s3.objects(prefix))


def test_a_mirror_that_refuses_writes_fails_the_landing_when_set_to_refuse(
    tmp_path: Path, s3: S3Server
) -> None:
    (tmp_path / "primary").mkdir()
    store = LandingStore(
        tmp_path / "primary",
        "s3://no-such-bucket/x",
        state_file=tmp_path / "state.json",
        storage_options=s3.storage_options(),
        on_failure="refuse",
    )
    with pytest.raises(OSError, match="no-such-bucket"):
        land_bytes(b"y", store)
    degrading = LandingStore(
        tmp_path / "primary", "s3://no-such-bucket/x",
        state_file=tmp_path / "state.json", storage_options=s3.storage_options(),
    )  # fmt: skip
    landed = land_bytes(b"y", degrading)
    assert landed.degraded == ("mirror",)
    assert degrading.status_of("mirror")["status"] == "degraded"


def test_audit_anchors_are_copied_to_the_store(
    s3_workspace: Callable[[], tuple[Path, str]], s3: S3Server
) -> None:
    from medlake.service.audit import anchor_head, anchor_log

    root, prefix = s3_workspace()
    workspace = open_workspace(root)
    with open_lake(workspace) as engine:
        from medlake.audit import append_event

        append_event(engine, actor="test", action="test.event")
        anchor = anchor_head(workspace, engine)
    assert anchor is not None
    stored = s3.objects(f"{prefix}/_anchors")
    assert list(stored.values()) == [anchor.line().encode()]
    assert anchor_log(workspace).last() == anchor  # the local file has it too
