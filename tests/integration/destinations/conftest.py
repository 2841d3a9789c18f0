"""Fixtures of the destination tests: real local servers, stopped after each test."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from destination_support import HttpSink, MailRecorder

from loyalty_cdp.testing import free_port


@pytest.fixture()
def make_sink() -> Iterator[Callable[..., HttpSink]]:
    """Start HTTP sinks on demand (``make_sink()`` or ``make_sink(port)``)."""
    sinks: list[HttpSink] = []

    def make(port: int = 0) -> HttpSink:
        sink = HttpSink(port)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


@pytest.fixture()
def smtp_server() -> Iterator[tuple[Controller, MailRecorder]]:
    """An aiosmtpd server on a free port, recording what it accepts."""
    recorder = MailRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the certificate doubles as the client's CA file)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(certificate),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return certificate, key


@pytest.fixture()
def starttls_smtp_server(tls_files: tuple[Path, Path]) -> Iterator[tuple[Controller, MailRecorder]]:
    """An aiosmtpd server that requires STARTTLS, then AUTH as ``mailer`` / ``s3cret``."""
    certificate, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    recorder = MailRecorder()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True,
        auth_required=True, auth_require_tls=True, authenticator=recorder.authenticate,
    )
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()
