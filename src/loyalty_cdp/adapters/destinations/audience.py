"""Retail-media audiences: a segment's members as SHA-256-hashed emails and phones, in full and delta files
(CSV and Parquet), written to a local directory, an SFTP server or an S3-compatible bucket.

Normalisation before hashing follows the ad networks' matching rules: emails trimmed and
lower-cased; phones in E.164 (``+14155550123``, Google Customer Match and The Trade Desk's
UID2) or, for the ``meta`` convention, E.164 without the ``+`` (Meta's "digits with country
code"). Each value is hashed with SHA-256 and written as lower-case hex, one identifier a
row, under the column names of the convention's upload template (``Email``/``Phone`` or
``email``/``phone``). Rows are sorted and unique, so an export depends only on its inputs.

Members in ``opted_out`` (opted out of sale/sharing) are never written; a member who opts
out after an earlier export shows up in the next delta's *remove* file, which is how the
networks are told to drop them. Each export writes, under ``<segment>/`` and for each
configured format (``csv``, ``parquet``): ``<stamp>-full.<ext>``, ``<stamp>-add.<ext>`` and
``<stamp>-remove.<ext>`` (the delta against the previous export), ``latest.<ext>`` (the full
list; the first format's is the base of the next delta), then ``manifest.json`` last, so a
reader that follows the manifest never sees a half-written set.

Files go through an :class:`AudienceTarget`: :class:`DirectoryTarget` (a temporary file
fsync'd and renamed into place), :class:`SftpTarget` (uploaded under a temporary name, then
renamed over the old file with OpenSSH's ``posix-rename``) and :class:`S3Target` (an object
PUT, which S3 and its compatibles make visible whole or not at all). A target that cannot
be reached raises :class:`AudienceTargetError` naming the target; files already there are
left as they were.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import errno
import hashlib
import io
import os
import posixpath
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

import msgspec

from loyalty_cdp.core.identifiers import EMAIL, normalise_identifier, normalise_phone
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

if TYPE_CHECKING:
    import paramiko

    from loyalty_cdp.adapters.destinations.config import DestinationConfig

Convention = Literal["google", "meta"]
Format = Literal["csv", "parquet"]
COLUMNS: dict[str, tuple[str, str]] = {"google": ("Email", "Phone"), "meta": ("email", "phone")}
FORMATS: tuple[str, ...] = ("csv", "parquet")
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_encode_json = msgspec.json.Encoder().encode
Row = tuple[str, str]


class AudienceTargetError(StorageUnavailable):
    """The audience target could not be reached or refused a read or write; the message names the target."""


def _target_kind(target: str) -> str:
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    return {"": "directory", "file": "directory", "sftp": "sftp", "s3": "s3"}.get(scheme, scheme)


_SFTP_FIELDS = ("password_env", "private_key_env", "private_key_file", "private_key_passphrase_env", "host_key",
                "known_hosts")
_S3_FIELDS = ("endpoint_url", "region", "addressing_style", "access_key_id_env", "secret_access_key_env",
              "session_token_env")


class AudienceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``settings:`` of an ``audience`` destination.

    ``target`` is a directory (relative: under the server's data directory),
    ``sftp://user@host[:port]/path`` or ``s3://bucket[/prefix]``. ``directory`` is the older
    name of a directory target; after checking, it holds the directory whenever the target is
    one (and None for SFTP and S3), so either name may be read. Secrets come from the
    environment variables the ``*_env`` settings name.
    """

    target: str | None = None
    directory: str | None = None
    formats: tuple[Format, ...] = ("csv",)
    convention: Convention = "google"
    default_region: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    # SFTP
    password_env: str | None = None
    private_key_env: str | None = None
    private_key_file: str | None = None
    private_key_passphrase_env: str | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    # S3-compatible
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    session_token_env: str | None = None

    def __post_init__(self) -> None:
        if self.target is None and self.directory is None:
            raise InvalidInput("target", "is required: a directory, sftp://user@host[:port]/path or "
                                         "s3://bucket[/prefix]")
        if self.target is not None and self.directory is not None and self.target != self.directory:
            raise InvalidInput("directory", "is the older name of target: give one of them")
        target = self.target if self.target is not None else self.directory
        assert target is not None
        if not target.strip():
            raise InvalidInput("target", "must not be empty")
        kind = _target_kind(target)
        if kind == "directory":
            if target.startswith("file://"):
                target = urlsplit(target).path
            msgspec.structs.force_setattr(self, "target", target)
            msgspec.structs.force_setattr(self, "directory", target)
        elif kind == "sftp":
            _sftp_address(target)
            if self.directory is not None:
                raise InvalidInput("directory", "names a local directory: give an sftp:// target as target")
        elif kind == "s3":
            _s3_address(target)
            if self.directory is not None:
                raise InvalidInput("directory", "names a local directory: give an s3:// target as target")
        else:
            raise InvalidInput("target", f"unknown scheme {kind!r}: use a directory, sftp:// or s3://")
        self._check_kind_settings(kind)
        if not self.formats:
            raise InvalidInput("formats", f"must list at least one of {', '.join(FORMATS)}")
        if len(set(self.formats)) != len(self.formats):
            raise InvalidInput("formats", "lists a format twice")

    def _check_kind_settings(self, kind: str) -> None:
        for name in _SFTP_FIELDS if kind != "sftp" else ():
            if getattr(self, name) is not None:
                raise InvalidInput(name, "is a setting of sftp:// targets")
        for name in _S3_FIELDS if kind != "s3" else ():
            if getattr(self, name) is not None:
                raise InvalidInput(name, "is a setting of s3:// targets")
        if kind == "sftp":
            if not (self.password_env or self.private_key_env or self.private_key_file):
                raise InvalidInput("password_env", "an sftp:// target needs password_env, private_key_env or "
                                                   "private_key_file")
            if self.private_key_env and self.private_key_file:
                raise InvalidInput("private_key_file", "give private_key_env or private_key_file, not both")
            if not (self.host_key or self.known_hosts):
                raise InvalidInput("host_key", "an sftp:// target needs the server's public key (host_key: "
                                               "\"ssh-ed25519 AAAA...\") or a known_hosts file, so that no "
                                               "other server can pose as it")
            if self.host_key:
                parse_host_key(self.host_key)
        if kind == "s3":
            if self.endpoint_url is not None:
                parts = urlsplit(self.endpoint_url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise InvalidInput("endpoint_url", "must be an http:// or https:// URL")
                if parts.username or parts.password:
                    raise InvalidInput("endpoint_url", "must not carry credentials: use access_key_id_env and "
                                                       "secret_access_key_env")
            if bool(self.access_key_id_env) != bool(self.secret_access_key_env):
                field = "secret_access_key_env" if self.access_key_id_env else "access_key_id_env"
                raise InvalidInput(field, "access_key_id_env and secret_access_key_env go together")
            if self.session_token_env and not self.access_key_id_env:
                raise InvalidInput("session_token_env", "needs access_key_id_env and secret_access_key_env")

    @property
    def kind(self) -> str:
        """``directory``, ``sftp`` or ``s3``."""
        assert self.target is not None
        return _target_kind(self.target)

    def under(self, data_dir: Path) -> AudienceSettings:
        """These settings with a relative directory target placed under ``data_dir`` (others unchanged)."""
        if self.directory is None or Path(self.directory).is_absolute():
            return self
        directory = str(Path(data_dir) / self.directory)
        return msgspec.structs.replace(self, target=directory, directory=directory)


class AudienceMember(msgspec.Struct, frozen=True):
    """A segment member's contact identifiers, as stored (normalised here)."""

    user_id: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()


class AudienceExport(msgspec.Struct, frozen=True):
    """What an export wrote: file names relative to the target (the first format's, then all), and row counts."""

    full: str
    added: str
    removed: str
    rows: int
    added_rows: int
    removed_rows: int
    files: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)


class AudienceTarget(Protocol):
    """Where audience files go. Names are ``<segment>/<file>``, relative to the target's root."""

    def read(self, name: str) -> bytes | None:
        """The file's content, or None when it does not exist."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Store the file whole (readers never see part of it), replacing any earlier one."""
        ...

    def names(self, folder: str) -> list[str]:
        """The files directly in ``folder`` (as ``folder/file``), sorted; none when it does not exist."""
        ...

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Hold one connection for the reads and writes inside (an export, an erasure)."""
        ...


def _safe_name(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidInput("name", f"{name!r} leaves the audience target")
    return name


class DirectoryTarget:
    """Audience files in a local directory, written to a temporary file and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidInput("name", f"{name!r} leaves the audience directory")
        return path

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def names(self, folder: str) -> list[str]:
        path = self._path(folder)
        if not path.is_dir():
            return []
        return sorted(f"{folder}/{entry.name}" for entry in path.iterdir() if entry.is_file())

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield


# -- SFTP -------------------------------------------------------------------------------------------


class SftpAddress(msgspec.Struct, frozen=True):
    username: str
    host: str
    port: int
    root: str


def _sftp_address(target: str) -> SftpAddress:
    parts = urlsplit(target)
    if parts.password is not None:
        raise InvalidInput("target", "must not hold a password: set password_env to the name of an environment "
                                     "variable that holds it")
    if not parts.username:
        raise InvalidInput("target", "an sftp:// target names its user: sftp://user@host[:port]/path")
    if not parts.hostname:
        raise InvalidInput("target", "an sftp:// target names its host: sftp://user@host[:port]/path")
    try:
        port = parts.port or 22
    except ValueError:
        raise InvalidInput("target", "the port must be a number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise InvalidInput("target", "the port must be a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise InvalidInput("target", "an sftp:// target has no query or fragment")
    path = parts.path
    if ".." in path.split("/"):
        raise InvalidInput("target", "the path must not contain ..")
    if path == "/~" or path.startswith("/~/"):  # the login directory, as in the sftp URI draft
        path = path[3:]
    root = posixpath.normpath(path) if path else "."
    return SftpAddress(parts.username, parts.hostname, port, root)


def parse_host_key(line: str) -> tuple[str, bytes]:
    """``"ssh-ed25519 AAAA... [comment]"`` as (key type, key bytes); InvalidInput naming ``host_key`` otherwise."""
    fields = line.split()
    if len(fields) < 2:
        raise InvalidInput("host_key", "must be a public key line: \"<type> <base64 key>\" as in known_hosts or "
                                       "ssh-keyscan output (without the host name)")
    try:
        data = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("host_key", "the key is not valid base64") from None
    if len(data) < 4 or data[4:4 + int.from_bytes(data[:4], "big")] != fields[0].encode():
        raise InvalidInput("host_key", f"the key's data is not a {fields[0]} key")
    return fields[0], data


def _private_key(text: str, passphrase: str | None, field: str) -> paramiko.PKey:
    """A private key (OpenSSH or PEM text) of any type paramiko supports; InvalidInput naming ``field`` if not."""
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = text.encode()
    secret = passphrase.encode() if passphrase else None
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=secret)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(field, f"is not a usable private key: {exc}") from None
    classes: list[tuple[type, type[paramiko.PKey]]] = [
        (rsa.RSAPrivateKey, paramiko.RSAKey), (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
        (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey)]
    for kind, key_class in classes:
        if isinstance(loaded, kind):
            try:
                return key_class.from_private_key(io.StringIO(text), password=passphrase)
            except paramiko.SSHException as exc:
                raise InvalidInput(field, f"is not a usable private key: {exc}") from None
    raise InvalidInput(field, f"holds an unsupported key type ({type(loaded).__name__})")


def sftp_key(settings: AudienceSettings, secret: Callable[[str], str | None]) -> paramiko.PKey | None:
    """The private key an SFTP target's settings name (None for password only); InvalidInput naming the field."""
    passphrase = secret("private_key_passphrase_env")
    if settings.private_key_file:
        try:
            text = Path(settings.private_key_file).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput("private_key_file", f"cannot be read: {exc}") from None
        return _private_key(text, passphrase, "private_key_file")
    if settings.private_key_env:
        return _private_key(secret("private_key_env") or "", passphrase, "private_key_env")
    return None


def check_target(settings: AudienceSettings, secret: Callable[[str], str | None]) -> None:
    """What can be checked of a target before using it: an SFTP key loads, a known_hosts file reads."""
    if settings.kind != "sftp":
        return
    sftp_key(settings, secret)
    if settings.known_hosts:
        import paramiko

        try:
            paramiko.HostKeys(str(Path(settings.known_hosts).expanduser()))
        except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
            raise InvalidInput("known_hosts", f"cannot be read: {exc}") from None


class SftpTarget:
    """Audience files on an SFTP server, through paramiko.

    paramiko rather than asyncssh: exports and erasures run synchronously (in a worker thread
    of the server, or in the command line), and paramiko is the long-established synchronous
    SSH client, so no event loop has to be run inside a thread. The server's host key must
    match the configured one (``host_key`` or a ``known_hosts`` file; unknown keys are
    refused), and only the configured password or key is tried (no agent, no ``~/.ssh``).
    A file is uploaded as ``.<name>.<random>.part`` beside its final name, then renamed over
    it with ``posix-rename@openssh.com`` (an atomic replace); a server without that extension
    gets a remove then a plain rename (the old file is briefly absent, never half-written).
    """

    def __init__(
        self, address: SftpAddress, *, password: str | None = None, key: paramiko.PKey | None = None,
        host_key: tuple[str, bytes] | None = None, known_hosts: Path | None = None, timeout_s: float = 30.0,
    ) -> None:
        self.address = address
        self.password = password
        self.key = key
        self.host_key = host_key
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s
        self._local = threading.local()

    def __str__(self) -> str:
        a = self.address
        path = a.root if a.root.startswith("/") else "" if a.root == "." else f"/~/{a.root}"
        return f"sftp://{a.username}@{a.host}:{a.port}{path}"

    def _fail(self, exc: BaseException) -> AudienceTargetError:
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
        return AudienceTargetError(f"audience target {self}: {reason}")

    def _connect(self) -> tuple[Any, Any]:
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        a = self.address
        name = a.host if a.port == 22 else f"[{a.host}]:{a.port}"
        try:
            if self.known_hosts is not None:
                client.get_host_keys().load(str(self.known_hosts))
            if self.host_key is not None:
                kind, data = self.host_key
                client.get_host_keys().add(name, kind, paramiko.PKey.from_type_string(kind, data))
            client.connect(
                a.host, a.port, username=a.username, password=self.password, pkey=self.key,
                timeout=self.timeout_s, banner_timeout=self.timeout_s, auth_timeout=self.timeout_s,
                channel_timeout=self.timeout_s, allow_agent=False, look_for_keys=False,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
                raise AudienceTargetError(f"audience target {self}: the server's host key is not the configured "
                                          f"one (host_key / known_hosts)") from exc
            raise self._fail(exc) from exc
        return client, sftp

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        if getattr(self._local, "sftp", None) is not None:
            yield
            return
        client, sftp = self._connect()
        self._local.sftp, self._local.made = sftp, set()
        try:
            yield
        finally:
            self._local.sftp = None
            client.close()

    @contextlib.contextmanager
    def _sftp(self) -> Iterator[Any]:
        import paramiko

        with self.session():
            try:
                yield self._local.sftp
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._fail(exc) from exc

    def _path(self, name: str) -> str:
        return posixpath.join(self.address.root, _safe_name(name))

    def read(self, name: str) -> bytes | None:
        path = self._path(name)
        with self._sftp() as sftp:
            try:
                with sftp.open(path, "rb") as file:
                    file.prefetch()
                    return bytes(file.read())
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise

    def _makedirs(self, sftp: Any, folder: str) -> None:
        made: set[str] = self._local.made
        if folder in made or folder in ("", ".", "/"):
            return
        try:
            if not stat.S_ISDIR(sftp.stat(folder).st_mode or 0):
                raise OSError(errno.ENOTDIR, f"{folder} is not a directory")
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            self._makedirs(sftp, posixpath.dirname(folder))
            try:
                sftp.mkdir(folder)
            except OSError:
                if not stat.S_ISDIR(sftp.stat(folder).st_mode or 0):  # made by someone else meanwhile
                    raise
        made.add(folder)

    def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        folder, base = posixpath.split(path)
        temporary = posixpath.join(folder, f".{base}.{secrets.token_hex(6)}.part")
        with self._sftp() as sftp:
            self._makedirs(sftp, folder)
            try:
                sftp.putfo(io.BytesIO(data), temporary, file_size=len(data), confirm=True)
                try:
                    sftp.posix_rename(temporary, path)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EACCES):
                        raise
                    with contextlib.suppress(OSError):  # no posix-rename: plain rename refuses to replace
                        sftp.remove(path)
                    sftp.rename(temporary, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(temporary)
                raise

    def names(self, folder: str) -> list[str]:
        path = self._path(folder)
        with self._sftp() as sftp:
            try:
                entries = sftp.listdir_attr(path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return []
                raise
        return sorted(f"{folder}/{entry.filename}" for entry in entries
                      if entry.st_mode is not None and stat.S_ISREG(entry.st_mode))


# -- S3 ---------------------------------------------------------------------------------------------


def _s3_address(target: str) -> tuple[str, str]:
    parts = urlsplit(target)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("target", "must not hold credentials: set access_key_id_env and secret_access_key_env")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput("target", "an s3:// target names a bucket of 3-63 characters of a-z 0-9 . - : "
                                     "s3://bucket[/prefix]")
    if parts.query or parts.fragment:
        raise InvalidInput("target", "an s3:// target has no query or fragment")
    prefix = parts.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidInput("target", "the prefix must not contain empty, . or .. parts")
    return bucket, prefix


class S3Target:
    """Audience files in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, ...), through boto3.

    boto3 because it is AWS's own SDK, kept in step with the S3 API (signatures, checksums,
    retries) and the client that MinIO and R2 document for their S3 endpoints (``endpoint_url``).
    A PUT replaces an object whole, so no temporary name is needed. Credentials come from the
    environment variables the settings name, otherwise from boto3's usual chain (the
    ``AWS_*`` variables, the instance role).
    """

    def __init__(self, url: str, bucket: str, prefix: str, client: Callable[[], Any]) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        self._make_client = client
        self._client: Any = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return self.url

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{_safe_name(name)}" if self.prefix else _safe_name(name)

    @contextlib.contextmanager
    def _call(self) -> Iterator[Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
            yield self._client
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise AudienceTargetError(f"audience target {self}: {error.get('Code', 'error')}: "
                                      f"{error.get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise AudienceTargetError(f"audience target {self}: {exc}") from exc

    def read(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        key = self._key(name)
        with self._call() as client:
            try:
                response = client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return bytes(response["Body"].read())

    def write(self, name: str, data: bytes) -> None:
        content_type = {".csv": "text/csv", ".json": "application/json"}.get(
            posixpath.splitext(name)[1], "application/octet-stream")
        with self._call() as client:
            client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, ContentType=content_type)

    def names(self, folder: str) -> list[str]:
        start = self._key(folder) + "/"
        found = []
        with self._call() as client:
            for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=start, Delimiter="/"):
                found += [f"{folder}/{item['Key'][len(start):]}" for item in page.get("Contents", ())]
        return sorted(found)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield  # the client pools its HTTP connections


def open_target(settings: AudienceSettings, secret: Callable[[str], str | None]) -> AudienceTarget:
    """The target ``settings`` describe; ``secret(field)`` is the value of a ``*_env`` setting's variable."""
    assert settings.target is not None
    kind = settings.kind
    if kind == "directory":
        return DirectoryTarget(Path(settings.target))
    if kind == "sftp":
        return SftpTarget(
            _sftp_address(settings.target), password=secret("password_env"), key=sftp_key(settings, secret),
            host_key=parse_host_key(settings.host_key) if settings.host_key else None,
            known_hosts=Path(settings.known_hosts).expanduser() if settings.known_hosts else None,
            timeout_s=settings.timeout_s,
        )
    bucket, prefix = _s3_address(settings.target)

    def client() -> Any:
        import boto3
        from botocore.config import Config

        credentials = {}
        if settings.access_key_id_env:
            credentials = {"aws_access_key_id": secret("access_key_id_env"),
                           "aws_secret_access_key": secret("secret_access_key_env"),
                           "aws_session_token": secret("session_token_env")}
        config = Config(connect_timeout=settings.timeout_s, read_timeout=settings.timeout_s,
                        retries={"max_attempts": 3, "mode": "standard"},
                        s3={"addressing_style": settings.addressing_style or "auto"})
        return boto3.session.Session().client("s3", endpoint_url=settings.endpoint_url,
                                              region_name=settings.region or "us-east-1", config=config,
                                              **credentials)

    return S3Target(settings.target, bucket, prefix, client)


# -- rows and files ---------------------------------------------------------------------------------


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalised_phone(raw: str, convention: Convention, default_region: str | None = None) -> str | None:
    """A phone as the convention hashes it: E.164, without ``+`` for Meta; None when not a valid number."""
    e164 = normalise_phone(raw.strip(), default_region)
    if e164 is None:
        return None
    return e164.removeprefix("+") if convention == "meta" else e164


def audience_rows(
    members: Iterable[AudienceMember], opted_out: Collection[str], *, convention: Convention = "google",
    default_region: str | None = None,
) -> list[Row]:
    """Sorted unique ``(email hash, phone hash)`` rows, one identifier each, without opted-out members."""
    rows: set[Row] = set()
    for member in members:
        if member.user_id in opted_out:
            continue
        for raw_email in member.emails:
            email = normalise_identifier(EMAIL, raw_email)
            if email is not None:
                rows.add((sha256_hex(email), ""))
        for raw_phone in member.phones:
            phone = normalised_phone(raw_phone, convention, default_region)
            if phone is not None:
                rows.add(("", sha256_hex(phone)))
    return sorted(rows)


def parquet_schema(header: tuple[str, str]) -> Any:
    """The Parquet files' schema: ``identifier_type`` (``email``/``phone``), ``hash`` (SHA-256, lower-case
    hex), then the CSV's two columns under the convention's names (null where the row is the other type)."""
    import pyarrow as pa

    return pa.schema(
        [pa.field("identifier_type", pa.string(), nullable=False), pa.field("hash", pa.string(), nullable=False),
         pa.field(header[0], pa.string()), pa.field(header[1], pa.string())],
        metadata={"hash": "sha256", "writer": "loyalty-cdp audience"},
    )


def _encode(form: str, header: tuple[str, str], rows: Iterable[Row]) -> bytes:
    if form == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    listed = list(rows)
    table = pa.Table.from_pydict({
        "identifier_type": ["email" if email else "phone" for email, _ in listed],
        "hash": [email or phone for email, phone in listed],
        header[0]: [email or None for email, _ in listed],
        header[1]: [phone or None for _, phone in listed],
    }, schema=parquet_schema(header))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _decode(form: str, data: bytes) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """A file's header and rows (cells as text, empty for a null)."""
    if form == "csv":
        lines = list(csv.reader(io.StringIO(data.decode())))
        return (tuple(lines[0]) if lines else ()), [tuple(line) for line in lines[1:]]
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise AudienceTargetError(f"an audience file is not readable Parquet: {exc}") from exc
    header = tuple(table.column_names)
    if header[:2] == ("identifier_type", "hash"):
        header = header[2:]
    columns = [table.column(name).to_pylist() for name in header]
    return header, [tuple(value or "" for value in row) for row in zip(*columns, strict=True)]


def _read_rows(data: bytes | None, header: tuple[str, str], form: str = "csv") -> set[Row]:
    if not data:
        return set()
    found, rows = _decode(form, data)
    if found != header:
        return set()  # another convention: nothing comparable, the delta adds everything
    return {(row[0], row[1]) for row in rows if len(row) == 2}


def _form(name: str) -> str | None:
    extension = posixpath.splitext(name)[1].lstrip(".")
    return extension if extension in FORMATS else None


def _count(data: bytes | None, form: str) -> int | None:
    return None if data is None else len(_decode(form, data)[1])


def export_audience(
    segment: str, members: Iterable[AudienceMember], opted_out: Collection[str], target: AudienceTarget,
    at_ms: int, *, convention: Convention = "google", default_region: str | None = None,
    formats: Collection[str] = ("csv",),
) -> AudienceExport:
    """Write the segment's full list and its delta against the previous export (see the module docs)."""
    if not _SEGMENT_NAME.fullmatch(segment):
        raise InvalidInput("segment", "must be 1-64 characters of A-Z a-z 0-9 _ . - (it names a folder)")
    if convention not in COLUMNS:
        raise InvalidInput("convention", f"must be one of {', '.join(COLUMNS)}")
    forms = list(dict.fromkeys(formats))
    if not forms or any(form not in FORMATS for form in forms):
        raise InvalidInput("formats", f"must list one or more of {', '.join(FORMATS)}")
    header = COLUMNS[convention]
    current = audience_rows(members, opted_out, convention=convention, default_region=default_region)
    stamp = datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    files = {form: {"full": f"{segment}/{stamp}-full.{form}", "added": f"{segment}/{stamp}-add.{form}",
                    "removed": f"{segment}/{stamp}-remove.{form}", "latest": f"{segment}/latest.{form}"}
             for form in forms}
    base = forms[0]
    with target.session():
        previous = _read_rows(target.read(files[base]["latest"]), header, base)
        present = set(current)
        added = [row for row in current if row not in previous]
        removed = sorted(previous - present)
        for form in forms:
            target.write(files[form]["full"], _encode(form, header, current))
            target.write(files[form]["added"], _encode(form, header, added))
            target.write(files[form]["removed"], _encode(form, header, removed))
        for form in [*forms[1:], base]:  # the base of the next delta last: a failed export leaves it intact
            target.write(files[form]["latest"], _encode(form, header, current))
        export = AudienceExport(
            full=files[base]["full"], added=files[base]["added"], removed=files[base]["removed"], rows=len(current),
            added_rows=len(added), removed_rows=len(removed), files=files,
        )
        manifest = {"segment": segment, "exported_at": at_ms, "convention": convention, "formats": forms,
                    **msgspec.to_builtins(export)}
        target.write(f"{segment}/manifest.json", _encode_json(manifest))  # last: it names a complete set
    return export


class AudienceDestination:
    """A configured audience export: where its files go, in which formats, and how identifiers are normalised."""

    def __init__(
        self, name: str, target: AudienceTarget, *, convention: Convention = "google",
        default_region: str | None = None, formats: Collection[str] = ("csv",),
    ) -> None:
        self.name = name
        self.target = target
        self.convention = convention
        self.default_region = default_region
        self.formats = tuple(dict.fromkeys(formats))

    def export(
        self, segment: str, members: Iterable[AudienceMember], opted_out: Collection[str], at_ms: int
    ) -> AudienceExport:
        return export_audience(
            segment, members, opted_out, self.target, at_ms, convention=self.convention,
            default_region=self.default_region, formats=self.formats,
        )

    # -- data-subject requests ------------------------------------------------------------------

    @staticmethod
    def person_hashes(emails: Iterable[str], phones: Iterable[str], default_region: str | None = None) -> set[str]:
        """Every hash under which a person's emails and phones can appear in any convention's files."""
        hashes = set()
        for raw in emails:
            email = normalise_identifier(EMAIL, raw)
            if email is not None:
                hashes.add(sha256_hex(email))
        for raw in phones:
            for convention in COLUMNS:
                phone = normalised_phone(raw, convention, default_region)  # type: ignore[arg-type]
                if phone is not None:
                    hashes.add(sha256_hex(phone))
        return hashes

    def holds(self, segment: str, hashes: Collection[str]) -> tuple[int, int | None]:
        """How many rows of the segment's last full export are the person's, and when it was exported."""
        if not _SEGMENT_NAME.fullmatch(segment):
            return 0, None
        base = self.formats[0] if self.formats else "csv"
        with self.target.session():
            data = self.target.read(f"{segment}/latest.{base}")
            manifest = self.target.read(f"{segment}/manifest.json")
        rows = sum(1 for row in (_decode(base, data)[1] if data else ()) if any(cell in hashes for cell in row))
        exported_at = msgspec.json.decode(manifest).get("exported_at") if manifest else None
        return rows, exported_at if isinstance(exported_at, int) else None

    def _segment_files(self, segment: str) -> list[str]:
        """Every CSV and Parquet file of the segment's exports at the target."""
        return [name for name in self.target.names(segment) if _form(name) is not None]

    def _erase_file(self, name: str, hashes: Collection[str]) -> int:
        """Rewrite one file without the rows that hold any of ``hashes``; the number of rows dropped."""
        form = _form(name)
        data = self.target.read(name)
        if not data or form is None:
            return 0
        if form == "csv":
            lines = list(csv.reader(io.StringIO(data.decode())))
            kept = [line for index, line in enumerate(lines) if index == 0 or not any(cell in hashes for cell in line)]
            if len(kept) == len(lines):
                return 0
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(kept)
            self.target.write(name, buffer.getvalue().encode())
            return len(lines) - len(kept)
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise AudienceTargetError(f"audience file {name} at {self.target} is not readable Parquet: {exc}") from exc
        needles = pa.array(sorted(hashes), pa.string())
        hit = pa.array([False] * table.num_rows, pa.bool_())
        for column in table.columns:
            if pa.types.is_string(column.type):
                hit = pc.or_(hit, pc.fill_null(pc.is_in(column, value_set=needles), False))
        dropped = int(pc.sum(hit).as_py() or 0)
        if dropped:
            sink = pa.BufferOutputStream()
            pq.write_table(table.filter(pc.invert(hit)), sink)
            self.target.write(name, bytes(sink.getvalue().to_pybytes()))
        return dropped

    def erase(self, segments: Iterable[str], hashes: Collection[str], at_ms: int) -> int:
        """Delete the person's rows (``hashes``) from every export file of ``segments``; returns rows removed.

        Every CSV and Parquet file under the segment's folder at the target is read and, when
        it holds the person, rewritten whole (readers never see part of one). The count is of
        rows removed in the base format's files (a row removed from both the CSV and the
        Parquet copy of a file counts once). A segment that lost rows gets a ``manifest.json``
        saying ``"replace": true``: the list at the network must be replaced by the full file
        (Customer Match and Meta both can), since no delta names the person any more, and
        ``erased_at``.
        """
        removed = 0
        base = self.formats[0] if self.formats else "csv"
        with self.target.session():
            for segment in sorted(set(segments)):
                if not _SEGMENT_NAME.fullmatch(segment):
                    continue
                here = 0
                changed = False
                for name in self._segment_files(segment):
                    dropped = self._erase_file(name, hashes)
                    changed = changed or dropped > 0
                    if _form(name) == base:
                        here += dropped
                if not changed:
                    continue
                manifest = self.target.read(f"{segment}/manifest.json")
                listed = msgspec.json.decode(manifest) if manifest else {"segment": segment}
                for key, count in (("full", "rows"), ("added", "added_rows"), ("removed", "removed_rows")):
                    named = listed.get(key)
                    form = _form(named) if isinstance(named, str) else None
                    rows = _count(self.target.read(named), form) if isinstance(named, str) and form else None
                    if rows is not None:
                        listed[count] = rows
                listed |= {"replace": True, "erased_at": at_ms}
                self.target.write(f"{segment}/manifest.json", _encode_json(listed))
                removed += here
        return removed


def audience_destination(config: DestinationConfig) -> AudienceDestination:
    """The audience export a checked ``audience`` destination describes, with its target opened."""
    settings: AudienceSettings = config.settings
    return AudienceDestination(
        config.name, open_target(settings, config.secret), convention=settings.convention,
        default_region=settings.default_region, formats=settings.formats,
    )
