"""Audience destination settings: targets, formats and credentials checked when the configuration is read,
each error naming its field (``destinations[3].settings.target``), secrets only from the environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from loyalty_cdp.adapters.destinations.audience import (
    AudienceSettings,
    DirectoryTarget,
    S3Target,
    SftpTarget,
    audience_destination,
)
from loyalty_cdp.adapters.destinations.config import parse_destinations
from loyalty_cdp.errors import ConfigError

HOST_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519")
OTHERS: list[dict[str, Any]] = [  # three destinations before the audience: its index is 3
    {"name": "crm", "type": "webhook", "settings": {"url": "https://crm.example/hook", "secret_env": "HOOK"}},
    {"name": "media-a", "type": "audience", "settings": {"directory": "/tmp/a"}},
    {"name": "media-b", "type": "audience", "settings": {"target": "/tmp/b"}},
]
ENV = {"HOOK": "hook-secret", "PW": "sftp-password", "KEY": CLIENT_KEY.export_private_key("openssh").decode(),
       "AK": "AKID", "SK": "secret-key"}
SFTP = {"target": "sftp://ads@sftp.partner.example:2222/upload", "password_env": "PW", "host_key": HOST_KEY}
S3 = {"target": "s3://audiences-bucket/loyalty", "endpoint_url": "https://minio.example:9000",
      "access_key_id_env": "AK", "secret_access_key_env": "SK"}


def parse(settings: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    raw = [*OTHERS, {"name": "media", "type": "audience", "settings": settings}]
    return parse_destinations(raw, ENV if environ is None else environ)[3]


def error(settings: dict[str, Any], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse(settings, environ)
    return raised.value


@pytest.mark.parametrize(("settings", "field", "words"), [
    ({}, "target", "is required"),
    ({"target": "  "}, "target", "must not be empty"),
    ({"target": "ftp://host/x"}, "target", "unknown scheme 'ftp'"),
    ({**SFTP, "target": "sftp://ads:hunter2@host/upload"}, "target", "password_env"),
    ({**SFTP, "target": "sftp://host/upload"}, "target", "names its user"),
    ({**SFTP, "target": "sftp://ads@host:99999/upload"}, "target", "port"),
    ({**SFTP, "target": "sftp://ads@host/a/../../etc"}, "target", ".."),
    ({**S3, "target": "s3://AK:SK@bucket/x"}, "target", "credentials"),
    ({**S3, "target": "s3://B_/x"}, "target", "bucket"),
    ({**S3, "target": "s3://bucket/a//b"}, "target", "prefix"),
    ({"target": "/srv/a", "directory": "/srv/b"}, "directory", "older name of target"),
    ({**SFTP, "directory": "/srv/a"}, "directory", "older name of target"),
    ({**{k: v for k, v in SFTP.items() if k != "target"}, "directory": SFTP["target"]}, "directory",
     "give an sftp:// target as target"),
    ({"target": "/srv/a", "formats": []}, "formats", "at least one"),
    ({"target": "/srv/a", "formats": ["csv", "csv"]}, "formats", "twice"),
    ({"target": "/srv/a", "formats": ["csv", "xml"]}, "formats[1]", "xml"),
    ({"target": "/srv/a", "timeout_s": 0}, "timeout_s", "> 0"),
    ({"target": "/srv/a", "endpoint_url": "http://x"}, "endpoint_url", "s3:// targets"),
    ({"target": "/srv/a", "password_env": "PW"}, "password_env", "sftp:// targets"),
    ({**S3, "host_key": HOST_KEY}, "host_key", "sftp:// targets"),
    ({**SFTP, "region": "eu-west-1"}, "region", "s3:// targets"),
    ({k: v for k, v in SFTP.items() if k != "password_env"}, "password_env", "private_key_env"),
    ({k: v for k, v in SFTP.items() if k != "host_key"}, "host_key", "known_hosts"),
    ({**SFTP, "host_key": "ssh-ed25519"}, "host_key", "public key line"),
    ({**SFTP, "host_key": "ssh-ed25519 not-base64!"}, "host_key", "base64"),
    ({**SFTP, "host_key": HOST_KEY.replace("ssh-ed25519", "ssh-rsa", 1)}, "host_key", "not a ssh-rsa key"),
    ({**SFTP, "private_key_env": "KEY", "private_key_file": "/k"}, "private_key_file", "not both"),
    ({**SFTP, "private_key_file": "/no/such/key"}, "private_key_file", "cannot be read"),
    ({**SFTP, "password_env": None, "private_key_env": "PW"}, "private_key_env", "not a usable private key"),
    ({**SFTP, "known_hosts": "/no/such/known_hosts", "host_key": None}, "known_hosts", "cannot be read"),
    ({**S3, "endpoint_url": "minio:9000"}, "endpoint_url", "http:// or https://"),
    ({**S3, "endpoint_url": "https://AK:SK@minio:9000"}, "endpoint_url", "credentials"),
    ({**S3, "secret_access_key_env": None}, "secret_access_key_env", "go together"),
    ({**S3, "access_key_id_env": None, "secret_access_key_env": None, "session_token_env": "SK"},
     "session_token_env", "needs access_key_id_env"),
    ({**S3, "secret_access_key": "literal"}, "secret_access_key", "secret_access_key_env"),
    ({**SFTP, "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "private_key", "private_key_env"),
    ({**SFTP, "password": "hunter2"}, "password", "password_env"),
    ({**SFTP, "password_env": "UNSET_VARIABLE"}, "password_env", "UNSET_VARIABLE is not set"),
    ({"target": "/srv/a", "bucket": "x"}, "", "unknown field"),
])
def test_errors_name_the_field(settings: dict[str, Any], field: str, words: str) -> None:
    raised = error({key: value for key, value in settings.items() if value is not None})
    assert raised.field == "destinations[3].settings" + (f".{field}" if field else "")
    assert words in raised.reason, raised.reason
    for secret in ("hunter2", "secret-key", "sftp-password"):
        assert secret not in str(raised)


def test_the_three_kinds_of_target_open_from_their_settings(tmp_path: Path) -> None:
    legacy = parse({"directory": "audiences"})
    assert legacy.settings.target == legacy.settings.directory == "audiences"
    resolved = legacy.settings.under(tmp_path)
    assert resolved.target == resolved.directory == str(tmp_path / "audiences")
    assert parse({"target": str(tmp_path)}).settings.under(Path("/elsewhere")).target == str(tmp_path)
    local = audience_destination(parse({"target": f"file://{tmp_path}/x", "formats": ["parquet", "csv"]}))
    assert isinstance(local.target, DirectoryTarget) and local.target.root == tmp_path / "x"
    assert local.formats == ("parquet", "csv")

    sftp = parse({**SFTP, "password_env": None, "private_key_env": "KEY"})
    assert sftp.settings.directory is None and sftp.settings.under(tmp_path) is sftp.settings
    target = audience_destination(sftp).target
    assert isinstance(target, SftpTarget) and target.key is not None and target.password is None
    assert str(target) == "sftp://ads@sftp.partner.example:2222/upload"
    home = audience_destination(parse({**SFTP, "target": "sftp://ads@host/~/drop"})).target
    assert isinstance(home, SftpTarget) and home.address.root == "drop" and home.address.port == 22
    assert repr(sftp.secrets["password_env"] if "password_env" in sftp.secrets else sftp.secrets["private_key_env"]) \
        == "Secret('***')"

    s3 = audience_destination(parse(S3)).target
    assert isinstance(s3, S3Target) and (s3.bucket, s3.prefix) == ("audiences-bucket", "loyalty")
    assert audience_destination(parse({**S3, "target": "s3://audiences-bucket"})).target.prefix == ""  # type: ignore[attr-defined]


def test_a_key_file_and_a_passphrase_from_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(CLIENT_KEY.export_private_key("openssh", passphrase="open sesame", rounds=50))
    settings = {**SFTP, "password_env": None, "private_key_file": str(key_file), "private_key_passphrase_env": "PASS"}
    settings = {key: value for key, value in settings.items() if value is not None}
    target = audience_destination(parse(settings, {**ENV, "PASS": "open sesame"})).target
    assert isinstance(target, SftpTarget) and target.key is not None
    assert target.key.get_name() == "ssh-ed25519"
    wrong = error(settings, {**ENV, "PASS": "not it"})
    assert wrong.field == "destinations[3].settings.private_key_file"


def test_settings_defaults() -> None:
    settings = AudienceSettings(target="/srv/audiences")
    assert (settings.formats, settings.convention, settings.kind, settings.timeout_s) == (("csv",), "google",
                                                                                          "directory", 30.0)


def test_the_command_line_exits_2_naming_the_field(tmp_path: Path) -> None:
    from loyalty_cdp.programs import retail_program_path

    base = retail_program_path().read_text().split("\n# --- Destinations")[0]
    program = tmp_path / "program.yaml"
    program.write_text(base + """
destinations:
  - name: media
    type: audience
    settings: {target: "sftp://ads:hunter2@partner.example/upload", host_key: "x y"}
""")
    command = [sys.executable, "-c", "from loyalty_cdp.cli.main import main; main()", "destinations", "list",
               "--config", str(program), "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "destinations[0].settings.target" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr + result.stdout
