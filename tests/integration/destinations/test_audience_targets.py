"""Audience files at real targets: a directory, an SFTP server (asyncssh, in the test) and an S3-compatible
server (moto's standalone server over HTTP), in CSV and Parquet, full and delta, erased on request.

Every target is opened the way the server opens it: a ``destinations:`` entry parsed with its
secrets from an environment, then ``audience_destination``. What arrived is read back from the
store itself (the SFTP server's directory, the bucket through a separate S3 client), Parquet
with pyarrow, and compared with the CSV rows.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore, Transition
from loyalty_cdp.adapters.destinations.audience import (
    AudienceDestination,
    AudienceMember,
    AudienceTargetError,
    audience_destination,
    parquet_schema,
)
from loyalty_cdp.adapters.destinations.config import parse_destinations
from loyalty_cdp.api.metrics import Metrics
from loyalty_cdp.core.consent import (
    SALE_SHARING,
    ConsentState,
    Observation,
    Record,
    consent_to_builtins,
    record_consent,
)
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.activation import Activation
from loyalty_cdp.settings import Settings

DAY_1 = 1_767_225_600_000
DAY_2 = DAY_1 + 86_400_000
DAY_3 = DAY_2 + 86_400_000
SFTP_USER, SFTP_PASSWORD = "ads", "correct horse battery staple"
S3_KEY_ID, S3_SECRET = "AKIDTESTAUDIENCE", "test-secret-key-audience"

ADA = AudienceMember("ada", emails=("Ada@Example.org ",), phones=("(415) 555-0123",))
BOB = AudienceMember("bob", emails=("bob@example.org",))
EVE = AudienceMember("eve", emails=("eve@example.org",), phones=("+14155550188",))  # opted out of sale/sharing
DAN = AudienceMember("dan", emails=("dan@example.org",), phones=("+442079460958",))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


EVE_HASHES = {sha("eve@example.org"), sha("+14155550188"), sha("14155550188")}


# -- the servers --------------------------------------------------------------------------------------


class SftpServer:
    """An SFTP server (asyncssh, its own event loop in a thread) serving ``root`` as ``/``.

    Password and public-key logins are accepted for ``SFTP_USER``. Renames onto a file named
    in ``refuse`` fail with "permission denied" (a server that breaks in the middle of an export).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.refuse: set[str] = set()
        self.logins = 0
        self.connections: set[Any] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.listener: Any = None
        self.port = 0

    @property
    def host_key_line(self) -> str:
        return self.host_key.export_public_key().decode().strip()

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()
        self.listener = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        self.port = self.listener.sockets[0].getsockname()[1]

    async def _listen(self) -> Any:
        server = self

        class Auth(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self.conn = conn
                server.connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                server.connections.discard(self.conn)

            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                ok = username == SFTP_USER and password == SFTP_PASSWORD
                server.logins += ok
                return ok

            def auth_completed(self) -> None:
                pass

        class Files(asyncssh.SFTPServer):
            def __init__(self, chan: Any) -> None:
                super().__init__(chan, chroot=str(server.root).encode())

            def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
                if posixpath.basename(newpath.decode()) in server.refuse:
                    raise asyncssh.SFTPPermissionDenied("refused by the test server")
                super().posix_rename(oldpath, newpath)

        authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())
        return await asyncssh.listen(
            "127.0.0.1", self.port, server_factory=Auth, server_host_keys=[self.host_key],
            authorized_client_keys=authorized, sftp_factory=Files, allow_scp=False,
        )

    def stop(self) -> None:
        """Stop listening (the port then refuses connections)."""
        async def close() -> None:
            self.listener.close()
            await self.listener.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def shutdown(self) -> None:
        """Stop listening, close every connection, let the loop's tasks finish, stop the loop."""
        if self.listener is not None and self.listener.sockets:
            self.stop()

        async def drain() -> None:
            for conn in list(self.connections):
                conn.close()
                await conn.wait_closed()
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[SftpServer]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    server = SftpServer(root)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        wsgi = getattr(server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET)


# -- a target as configured, and the store seen from outside -------------------------------------------


@dataclass
class Target:
    kind: str
    audience: AudienceDestination
    settings: dict[str, Any]
    environ: dict[str, str]
    files: Any  # () -> {name under the target: bytes}, read from the store, not through the target


def configured(settings: dict[str, Any], environ: dict[str, str], name: str = "retail-media") -> AudienceDestination:
    [config] = parse_destinations([{"name": name, "type": "audience", "settings": settings}], environ)
    return audience_destination(config)


def directory_target(root: Path, formats: list[str]) -> Target:
    settings = {"target": str(root / "audiences"), "formats": formats, "default_region": "US"}

    def files() -> dict[str, bytes]:
        base = root / "audiences"
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}

    return Target("directory", configured(settings, {}), settings, {}, files)


def sftp_target(server: SftpServer, formats: list[str]) -> Target:
    settings = {"target": f"sftp://{SFTP_USER}@127.0.0.1:{server.port}/exports/audiences", "formats": formats,
                "default_region": "US", "password_env": "AUDIENCE_SFTP_PASSWORD", "host_key": server.host_key_line,
                "timeout_s": 5}
    environ = {"AUDIENCE_SFTP_PASSWORD": SFTP_PASSWORD}

    def files() -> dict[str, bytes]:
        base = server.root / "exports" / "audiences"
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}

    return Target("sftp", configured(settings, environ), settings, environ, files)


def s3_target_view(endpoint: str, url: str) -> Any:
    """Every object under an s3:// target, read with a separate client: {name under the prefix: bytes}."""
    bucket, prefix = url.removeprefix("s3://").split("/", 1)

    def files() -> dict[str, bytes]:
        client = s3_client(endpoint)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        return {item["Key"].removeprefix(prefix + "/"): client.get_object(Bucket=bucket, Key=item["Key"])[
            "Body"].read() for item in listed}

    return files


def s3_target(endpoint: str, formats: list[str]) -> Target:
    bucket = f"audiences-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    settings = {"target": f"s3://{bucket}/retail/media", "formats": formats, "default_region": "US",
                "endpoint_url": endpoint, "access_key_id_env": "AUDIENCE_S3_KEY",
                "secret_access_key_env": "AUDIENCE_S3_SECRET", "timeout_s": 2}
    environ = {"AUDIENCE_S3_KEY": S3_KEY_ID, "AUDIENCE_S3_SECRET": S3_SECRET}
    return Target("s3", configured(settings, environ), settings, environ, s3_target_view(endpoint, settings["target"]))


@pytest.fixture(params=["directory", "sftp", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    formats = ["csv", "parquet"]
    if request.param == "directory":
        return directory_target(tmp_path, formats)
    if request.param == "sftp":
        return sftp_target(request.getfixturevalue("sftp_server"), formats)
    return s3_target(request.getfixturevalue("s3_server"), formats)


def csv_rows(data: bytes) -> list[tuple[str, ...]]:
    return [tuple(row) for row in csv.reader(io.StringIO(data.decode()))]


def parquet_rows(data: bytes) -> tuple[pa.Table, list[tuple[str, ...]]]:
    """The table, and its rows in the CSV's shape (header first, empty cells for nulls)."""
    table = pq.read_table(pa.BufferReader(data))
    header = tuple(table.column_names[2:])
    body = [tuple(cell or "" for cell in row) for row in zip(*(table.column(c).to_pylist() for c in header),
                                                               strict=True)]
    return table, [header, *body]


# -- tests ----------------------------------------------------------------------------------------------


def test_full_and_delta_files_arrive_in_csv_and_parquet_without_opted_out_members(target: Target) -> None:
    first = target.audience.export("gold-lapsing", [ADA, BOB, EVE], {"eve"}, DAY_1)
    assert (first.rows, first.added_rows, first.removed_rows) == (3, 3, 0)
    # Next day: Ada opts out of sale/sharing, Bob leaves the segment, Dan joins.
    second = target.audience.export("gold-lapsing", [ADA, DAN, EVE], {"eve", "ada"}, DAY_2)
    assert (second.rows, second.added_rows, second.removed_rows) == (2, 2, 3)

    files = target.files()
    assert not [name for name in files if name.endswith(".part") or "/." in name]  # temporaries renamed into place
    manifest = json.loads(files["gold-lapsing/manifest.json"])
    assert manifest["formats"] == ["csv", "parquet"] and manifest["exported_at"] == DAY_2
    assert manifest["full"] == second.full and manifest["full"].endswith("-full.csv")
    for form in ("csv", "parquet"):
        for role in ("full", "added", "removed", "latest"):
            assert manifest["files"][form][role] in files, (form, role)

    header = ("Email", "Phone")
    dan = [(sha("dan@example.org"), ""), ("", sha("+442079460958"))]
    gone = [(sha("ada@example.org"), ""), ("", sha("+14155550123")), (sha("bob@example.org"), "")]
    expected = {"full": [header, *sorted(dan)], "added": [header, *sorted(dan)],
                "removed": [header, *sorted(gone)], "latest": [header, *sorted(dan)]}
    for role, rows in expected.items():
        from_csv = csv_rows(files[manifest["files"]["csv"][role]])
        table, from_parquet = parquet_rows(files[manifest["files"]["parquet"][role]])
        assert from_csv == rows, role
        assert from_parquet == from_csv, role  # Parquet read back equals the CSV rows
        assert table.schema.equals(parquet_schema(("Email", "Phone")))  # the stable schema
        types = table.column("identifier_type").to_pylist()
        hashes = table.column("hash").to_pylist()
        assert [(t, h) for t, h in zip(types, hashes, strict=True)] == [
            ("email" if email else "phone", email or phone) for email, phone in rows[1:]]
    first_full = csv_rows(files[first.full])
    assert parquet_rows(files[first.files["parquet"]["full"]])[1] == first_full
    assert sorted(first_full[1:]) == sorted([(sha("ada@example.org"), ""), ("", sha("+14155550123")),
                                             (sha("bob@example.org"), "")])

    everything = b"".join(files.values())
    for hashed in EVE_HASHES:  # never written, in no file, in no format
        assert hashed.encode() not in everything
    for name, data in files.items():
        if name.endswith(".parquet"):
            assert not EVE_HASHES & {cell for row in parquet_rows(data)[1] for cell in row}


def test_the_privacy_erase_removes_the_persons_hashes_from_every_file_at_the_target(target: Target) -> None:
    target.audience.export("new-members", [ADA, BOB], set(), DAY_1)
    target.audience.export("new-members", [BOB], set(), DAY_2)  # Ada left: her hashes are in the remove files
    target.audience.export("new-members", [ADA, BOB], set(), DAY_3)
    hashes = AudienceDestination.person_hashes(["ADA@example.org"], ["+1 415 555 0123"], "US")
    assert target.audience.holds("new-members", hashes) == (2, DAY_3)
    before = target.files()
    assert sum(sha("ada@example.org").encode() in data for name, data in before.items() if name.endswith(".csv")) == 6

    removed = target.audience.erase(["new-members", "never-exported"], hashes, DAY_3 + 1)
    assert removed == 2 * 6  # her email and phone rows, in the CSV (base) files: two full, two add, one remove, latest

    after = target.files()
    assert set(after) == set(before)  # files rewritten, none added or lost
    for name, data in after.items():
        cells = ({cell for row in parquet_rows(data)[1] for cell in row} if name.endswith(".parquet")
                 else {cell for row in csv_rows(data) for cell in row} if name.endswith(".csv") else set())
        assert not cells & hashes, name
        assert sha("ada@example.org").encode() not in data and sha("+14155550123").encode() not in data, name
    assert (sha("bob@example.org"), "") in csv_rows(after["new-members/latest.csv"])
    assert (sha("bob@example.org"), "") in parquet_rows(after["new-members/latest.parquet"])[1]
    manifest = json.loads(after["new-members/manifest.json"])
    assert manifest["replace"] is True and manifest["erased_at"] == DAY_3 + 1 and manifest["rows"] == 1
    assert target.audience.holds("new-members", hashes)[0] == 0
    assert target.audience.erase(["new-members"], hashes, DAY_3 + 2) == 0  # nothing left to remove


def test_a_parquet_only_export_deltas_against_its_own_base(tmp_path: Path, s3_server: str) -> None:
    target = s3_target(s3_server, ["parquet"])
    target.audience.export("vip", [ADA, BOB], set(), DAY_1)
    second = target.audience.export("vip", [BOB, DAN], set(), DAY_2)
    assert (second.added_rows, second.removed_rows) == (2, 2) and second.full.endswith(".parquet")
    files = target.files()
    assert not [name for name in files if name.endswith(".csv")]
    assert parquet_rows(files[second.removed])[1][1:] == [("", sha("+14155550123")), (sha("ada@example.org"), "")]
    hashes = AudienceDestination.person_hashes(["bob@example.org"], [])
    assert target.audience.holds("vip", hashes)[0] == 1
    assert target.audience.erase(["vip"], hashes, DAY_3) == 4  # the two full files, the first add file, latest


def test_a_target_that_is_down_fails_the_export_clearly_and_leaves_the_previous_files(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    target = sftp_target(sftp_server, ["csv", "parquet"])
    target.audience.export("gold", [ADA, BOB], set(), DAY_1)
    before = target.files()
    sftp_server.stop()
    started = time.monotonic()
    with pytest.raises(AudienceTargetError) as failed:
        target.audience.export("gold", [DAN], set(), DAY_2)
    assert f"sftp://{SFTP_USER}@127.0.0.1:{sftp_server.port}/exports/audiences" in str(failed.value)
    assert time.monotonic() - started < 5
    assert failed.value.http_status == 503
    assert target.files() == before
    with pytest.raises(AudienceTargetError):  # an erasure cannot be claimed done either
        target.audience.erase(["gold"], {sha("bob@example.org")}, DAY_2)


def test_an_s3_target_that_stops_answering_fails_after_its_timeout_and_keeps_the_previous_files(
    s3_server: str,
) -> None:
    target = s3_target(s3_server, ["csv", "parquet"])
    target.audience.export("gold", [ADA, BOB], set(), DAY_1)
    before = target.files()
    with socket.socket() as hung:  # accepts connections (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        unreachable = configured({**target.settings, "endpoint_url": endpoint, "timeout_s": 0.5}, target.environ)
        started = time.monotonic()
        with pytest.raises(AudienceTargetError) as failed:
            unreachable.export("gold", [DAN], set(), DAY_2)
        assert str(failed.value).startswith(f"audience target {target.settings['target']}: ")
        assert "timeout" in str(failed.value).lower()
        assert time.monotonic() - started < 15
    assert target.files() == before
    unreachable = configured({**target.settings, "endpoint_url": endpoint}, target.environ)  # now refused
    with pytest.raises(AudienceTargetError, match="Could not connect"):
        unreachable.erase(["gold"], {sha("bob@example.org")}, DAY_2)
    assert target.files() == before


def test_a_failure_in_the_middle_of_an_export_leaves_the_base_and_the_manifest(sftp_server: SftpServer) -> None:
    target = sftp_target(sftp_server, ["csv", "parquet"])
    target.audience.export("gold", [ADA, BOB], set(), DAY_1)
    before = target.files()
    sftp_server.refuse = {"latest.csv"}  # every file of the export goes in, but not the base
    with pytest.raises(AudienceTargetError, match="refused by the test server"):
        target.audience.export("gold", [BOB, DAN], set(), DAY_2)
    after = target.files()
    assert after["gold/manifest.json"] == before["gold/manifest.json"]
    assert after["gold/latest.csv"] == before["gold/latest.csv"]
    assert not [name for name in after if name.endswith(".part")]  # the refused upload was removed
    sftp_server.refuse = set()
    third = target.audience.export("gold", [BOB, DAN], set(), DAY_3)
    assert (third.added_rows, third.removed_rows) == (2, 2)  # against the first export: nothing lost
    assert json.loads(target.files()["gold/manifest.json"])["exported_at"] == DAY_3


def test_sftp_logs_in_with_a_key_and_refuses_a_server_with_another_host_key(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    key_text = sftp_server.client_key.export_private_key("openssh").decode()
    url = f"sftp://{SFTP_USER}@127.0.0.1:{sftp_server.port}/keyed"
    audience = configured({"target": url, "private_key_env": "AUDIENCE_KEY", "host_key": sftp_server.host_key_line},
                          {"AUDIENCE_KEY": key_text})
    audience.export("vip", [BOB], set(), DAY_1)
    assert csv_rows((sftp_server.root / "keyed" / "vip" / "latest.csv").read_bytes())[1:] == [
        (sha("bob@example.org"), "")]
    assert sftp_server.logins == 0  # by key, not password

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sftp_server.port} {sftp_server.host_key_line}\n")
    by_file = configured({"target": url, "private_key_env": "AUDIENCE_KEY", "known_hosts": str(known_hosts)},
                         {"AUDIENCE_KEY": key_text})
    assert by_file.holds("vip", {sha("bob@example.org")}) == (1, DAY_1)

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong_host = configured({"target": url, "password_env": "PW", "host_key": impostor}, {"PW": SFTP_PASSWORD})
    with pytest.raises(AudienceTargetError, match=r"Host key for server .* does not match"):
        wrong_host.export("vip", [], set(), DAY_2)
    wrong_password = configured({"target": url, "password_env": "PW", "host_key": sftp_server.host_key_line},
                                {"PW": "wrong"})
    with pytest.raises(AudienceTargetError, match="uthentication"):
        wrong_password.export("vip", [], set(), DAY_2)
    assert json.loads((sftp_server.root / "keyed" / "vip" / "manifest.json").read_text())["exported_at"] == DAY_1


def test_s3_credentials_come_from_the_environment_and_wrong_ones_are_reported(s3_server: str) -> None:
    target = s3_target(s3_server, ["csv"])
    target.audience.export("vip", [BOB], set(), DAY_1)
    bucket = target.settings["target"].removeprefix("s3://").split("/")[0]
    head = s3_client(s3_server).head_object(Bucket=bucket, Key="retail/media/vip/latest.csv")
    assert head["ContentType"] == "text/csv"
    missing = configured({**target.settings, "target": "s3://no-such-bucket-here/x"}, target.environ)
    with pytest.raises(AudienceTargetError, match="NoSuchBucket"):
        missing.export("vip", [BOB], set(), DAY_2)


# -- through the server's activation service ------------------------------------------------------------


class Members:
    """The processor's member view, standing in: member id -> profile."""

    def __init__(self, *profiles: Profile) -> None:
        self.profiles = {profile.member_id: profile for profile in profiles}

    def find(self, kind: str, value: str) -> str | None:
        return None

    def profile(self, member_id: str) -> Profile | None:
        return self.profiles.get(member_id)


def profile(n: int, *, sharing: bool) -> Profile:
    observation = Observation(SALE_SHARING, Record(sharing, 1_000, f"consent-{n}", "web", "member", False, 1_000))
    return Profile(member_id=f"m-{n}", user_id=f"user-{n}",
                   identities={"user_id": [f"user-{n}"], "email": [f"ann.{n}@example.com"],
                               "phone": [f"+1415555{n:04d}"]},
                   consent=consent_to_builtins(record_consent(ConsentState(), [observation])))


def test_the_server_exports_every_segment_to_sftp_and_s3_and_erases_there(
    tmp_path: Path, sftp_server: SftpServer, s3_server: str
) -> None:
    bucket = f"audiences-{uuid.uuid4().hex[:12]}"
    s3_client(s3_server).create_bucket(Bucket=bucket)
    base = retail_program_path().read_text().split("\n# --- Destinations")[0]
    path = tmp_path / "program.yaml"
    path.write_text(base + f"""
destinations:
  - name: partner-sftp
    type: audience
    settings:
      target: sftp://{SFTP_USER}@127.0.0.1:{sftp_server.port}/drop
      formats: [csv, parquet]
      password_env: T_SFTP_PASSWORD
      host_key: "{sftp_server.host_key_line}"
  - name: network-s3
    type: audience
    settings:
      target: s3://{bucket}/loyalty
      formats: [parquet]
      convention: meta
      endpoint_url: "{s3_server}"
      access_key_id_env: T_S3_KEY
      secret_access_key_env: T_S3_SECRET
  - name: local
    type: audience
    settings: {{target: audiences}}
""")
    environ = {"T_SFTP_PASSWORD": SFTP_PASSWORD, "T_S3_KEY": S3_KEY_ID, "T_S3_SECRET": S3_SECRET,
               "LOYALTY_CDP_AUDIENCE_EVERY_S": "0"}
    members = Members(profile(30, sharing=True), profile(31, sharing=False))
    active = Activation(Settings(data_dir=tmp_path / "data"), path, lambda calls: None, Metrics(), members=members,
                        environ=environ)
    try:
        DecisionStore(active.outbox).write(Batch(transitions=[
            Transition("high-value", f"m-{n}", 1, "entered", 1_000) for n in (30, 31)]), 2_000)
        written = active.export_audiences(at_ms=DAY_1)
        assert written["partner-sftp/high-value"] == written["network-s3/high-value"] == 2  # member 30 only
        assert written["local/high-value"] == 2 and written["partner-sftp/new-members"] == 0
        sftp_rows = csv_rows((sftp_server.root / "drop" / "high-value" / "latest.csv").read_bytes())
        assert sorted(sftp_rows[1:]) == sorted([(sha("ann.30@example.com"), ""), ("", sha("+14155550030"))])
        assert parquet_rows((sftp_server.root / "drop" / "high-value" / "latest.parquet").read_bytes())[1] == sftp_rows
        s3_files = s3_target_view(s3_server, f"s3://{bucket}/loyalty")()
        meta_rows = parquet_rows(s3_files["high-value/latest.parquet"])[1]
        assert meta_rows[0] == ("email", "phone")  # Meta's column names, phones without "+"
        assert sorted(meta_rows[1:]) == sorted([(sha("ann.30@example.com"), ""), ("", sha("14155550030"))])
        assert (tmp_path / "data" / "audiences" / "high-value" / "latest.csv").is_file()  # relative: in the data dir
        listed = active.person_audiences({"high-value"}, {"ann.30@example.com"}, {"+14155550030"})
        assert {(row["destination"], row["rows"]) for row in listed} == {
            ("partner-sftp", 2), ("network-s3", 2), ("local", 2)}

        removed = active.erase_from_audiences({"high-value"}, {"ann.30@example.com"}, {"+14155550030"}, DAY_2)
        assert removed == 3 * (2 + 2 + 2)  # each destination: full, add and latest files of the one export
        for data in [*(p.read_bytes() for p in (sftp_server.root / "drop").rglob("*.*")),
                     *s3_target_view(s3_server, f"s3://{bucket}/loyalty")().values()]:
            assert sha("ann.30@example.com").encode() not in data and sha("14155550030").encode() not in data
        assert active.person_audiences({"high-value"}, {"ann.30@example.com"}, {"+14155550030"}) == []
    finally:
        asyncio.run(active.close())
