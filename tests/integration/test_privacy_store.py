"""The request store: idempotent creation, statuses and deadlines, and redaction that leaves no trace in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty_cdp.adapters.privacy_requests import PrivacyRequestStore
from loyalty_cdp.adapters.suppression import PRIVACY_DB, SuppressionList
from loyalty_cdp.core.privacy import COMPLETED, FAILED, IN_PROGRESS, RECEIVED, deadline, parse_request
from loyalty_cdp.errors import Conflict, InvalidInput, NotFound

RECEIVED_AT = 1_772_442_000_000  # 2026-03-02T09:00:00Z


def spec(kind: str = "erasure", value: str = "ann@example.com", regime: str | None = "gdpr", **extra: object):
    body: dict[str, object] = {"type": kind, "identifier": {"type": "email", "value": value}, **extra}
    if regime is not None:
        body["regime"] = regime
    return parse_request(body)


@pytest.fixture()
def store(tmp_path: Path):
    requests = PrivacyRequestStore(tmp_path)
    yield requests
    requests.close()


def test_create_get_and_list(store: PrivacyRequestStore) -> None:
    created, new = store.create(spec(), actor="key:k1", received_at=RECEIVED_AT)
    assert new and created.status == RECEIVED and created.request_id.startswith("pr_")
    assert created.deadline_at == deadline("erasure", "gdpr", RECEIVED_AT)
    assert store.get(created.request_id) == created
    other, _ = store.create(spec("access", "bob@example.com", None), actor="key:k1", received_at=RECEIVED_AT + 1)
    assert [r.request_id for r in store.list()] == [created.request_id, other.request_id]
    assert store.list(status=COMPLETED) == []
    view = created.view(RECEIVED_AT)
    assert view["identifier"] == {"type": "email", "value": "ann@example.com", "redacted": False}
    assert view["deadline"] == "2026-04-02T09:00:00.000Z" and view["overdue"] is False
    with pytest.raises(NotFound):
        store.get("pr_missing")
    with pytest.raises(InvalidInput):
        store.list(status="done")


def test_a_request_key_makes_creation_idempotent(store: PrivacyRequestStore) -> None:
    first, new = store.create(spec(), actor="key:k1", received_at=RECEIVED_AT, request_key="ticket-77")
    again, again_new = store.create(spec(value=" ANN@example.com"), actor="key:k1", received_at=RECEIVED_AT + 500,
                                    request_key="ticket-77")
    assert new and not again_new and again == first
    with pytest.raises(Conflict):
        store.create(spec(value="bob@example.com"), actor="key:k1", request_key="ticket-77")
    with pytest.raises(Conflict):
        store.create(spec(kind="access"), actor="key:k1", request_key="ticket-77")
    with pytest.raises(InvalidInput) as error:
        store.create(spec(), actor="key:k1", request_key="")
    assert error.value.field == "request_key"
    assert len(store.list()) == 1


def test_statuses_move_only_forward(store: PrivacyRequestStore) -> None:
    request, _ = store.create(spec("access"), actor="key:k1", received_at=RECEIVED_AT)
    running = store.update_status(request.request_id, IN_PROGRESS, now_ms=RECEIVED_AT + 10)
    assert running.status == IN_PROGRESS and running.completed_at is None
    failed = store.update_status(request.request_id, FAILED, now_ms=RECEIVED_AT + 20, reason="profile store down")
    assert failed.reason == "profile store down"
    store.update_status(request.request_id, IN_PROGRESS, now_ms=RECEIVED_AT + 30)
    done = store.update_status(request.request_id, COMPLETED, now_ms=RECEIVED_AT + 40, result={"events": 12})
    assert (done.completed_at, done.result, done.identifier_value) == (RECEIVED_AT + 40, {"events": 12}, "ann@example.com")
    with pytest.raises(Conflict):
        store.update_status(request.request_id, IN_PROGRESS)
    with pytest.raises(NotFound):
        store.update_status("pr_missing", IN_PROGRESS)


def test_overdue_requests_and_extensions(store: PrivacyRequestStore) -> None:
    late, _ = store.create(spec("access"), actor="key:k1", received_at=RECEIVED_AT)
    opt_out, _ = store.create(spec("opt_out_sale", regime="ccpa"), actor="key:k1", received_at=RECEIVED_AT)
    month_later = deadline("access", "gdpr", RECEIVED_AT) + 1
    assert [r.request_id for r in store.overdue(month_later)] == [opt_out.request_id, late.request_id]
    extended = store.extend(late.request_id, reason="many systems to search", now_ms=RECEIVED_AT + 5)
    assert extended.extended and extended.deadline_at == deadline("access", "gdpr", RECEIVED_AT, extended=True)
    assert extended.view(month_later)["overdue"] is False
    with pytest.raises(Conflict):
        store.extend(late.request_id, reason="again")
    with pytest.raises(Conflict):  # CCPA opt-outs have no extension
        store.extend(opt_out.request_id, reason="busy")
    with pytest.raises(InvalidInput):
        store.extend(late.request_id, reason=" ")


def _bytes_of(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.iterdir() if p.name.startswith(PRIVACY_DB))


def test_completing_an_erasure_redacts_every_request_about_the_person(tmp_path: Path) -> None:
    store = PrivacyRequestStore(tmp_path)
    suppression = SuppressionList(tmp_path)  # another connection on the same file, as in the server
    access, _ = store.create(spec("access", "ann.marker@example.com"), actor="key:k1", received_at=RECEIVED_AT)
    correction, _ = store.create(
        parse_request({"type": "correction", "identifier": {"type": "email", "value": "ann.marker@example.com"},
                       "corrections": {"last_name": "Zyxmarker"}}), actor="key:k1", received_at=RECEIVED_AT)
    other, _ = store.create(spec("access", "bob@example.com"), actor="key:k1", received_at=RECEIVED_AT)
    erasure, _ = store.create(spec("erasure", "ann.marker@example.com"), actor="key:k1", received_at=RECEIVED_AT)
    assert b"ann.marker" in _bytes_of(tmp_path) and b"Zyxmarker" in _bytes_of(tmp_path)
    store.update_status(erasure.request_id, IN_PROGRESS)
    suppression.add([("email", "ann.marker@example.com")])
    done = store.update_status(erasure.request_id, COMPLETED, result={"events_deleted": 3})
    assert done.identifier_value is None and done.view(RECEIVED_AT)["identifier"]["redacted"] is True
    assert store.get(access.request_id).identifier_value is None
    assert store.get(correction.request_id).corrections is None
    assert store.get(other.request_id).identifier_value == "bob@example.com"
    assert store.get(erasure.request_id).identifier_digest == access.identifier_digest  # still the same subject
    content = _bytes_of(tmp_path)
    assert b"ann.marker" not in content and b"Zyxmarker" not in content and b"bob@example.com" in content
    assert suppression.is_suppressed("email", "ann.marker@example.com")
    suppression.close()
    store.close()


def test_redact_by_every_identifier_of_an_erased_member(store: PrivacyRequestStore, tmp_path: Path) -> None:
    by_phone = parse_request({"type": "access", "identifier": {"type": "phone", "value": "+1 415 555 0199"}})
    phone_request, _ = store.create(by_phone, actor="key:k1", received_at=RECEIVED_AT)
    store.create(spec("opt_out_sale", "ann.marker@example.com"), actor="key:k1", received_at=RECEIVED_AT)
    erasure, _ = store.create(spec("erasure", "ann.marker@example.com"), actor="key:k1", received_at=RECEIVED_AT)
    identifiers = [("email", "ann.marker@example.com"), ("phone", "+14155550199"), ("user_id", "u-ann")]
    assert store.redact(identifiers, keep=erasure.request_id) == 2
    assert store.redact(identifiers, keep=erasure.request_id) == 0
    assert store.get(phone_request.request_id).identifier_value is None
    assert store.get(erasure.request_id).identifier_value == "ann.marker@example.com"  # needed if it runs again
    store.update_status(erasure.request_id, COMPLETED)
    assert b"ann.marker" not in _bytes_of(tmp_path) and b"4155550199" not in _bytes_of(tmp_path)


def test_requests_survive_reopening(tmp_path: Path) -> None:
    first = PrivacyRequestStore(tmp_path)
    request, _ = first.create(spec(), actor="key:k1", received_at=RECEIVED_AT, request_key="k")
    first.close()
    reopened = PrivacyRequestStore(tmp_path)
    assert reopened.get(request.request_id) == request
    assert reopened.create(spec(), actor="key:k1", request_key="k") == (request, False)
    reopened.close()
