"""One contract suite, run against every profile store: each promise of ``base.py``, checked."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.eventlog.base import EventLog
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.base import Changes, IdentityRecord, ProfileStore, member_keys
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.bootstrap import open_profile_store
from loyalty_cdp.core.events import Event, normalise, parse_time
from loyalty_cdp.core.identity import Member
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.errors import StorageUnavailable
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.settings import Settings
from loyalty_cdp.simulator.generator import simulate

OpenStore = Callable[[], ProfileStore]
State = tuple[int, dict[str, dict[str, list[str]]], dict[str, bytes]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens a new store object over the same database each time it is called."""
    factory: OpenStore
    if request.param == "sqlite":
        path = tmp_path / "data" / "profiles.db"
        factory = lambda: SqliteProfileStore(path)  # noqa: E731
    else:
        from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

        dsn = request.getfixturevalue("postgres_dsn")
        factory = lambda: PostgresProfileStore(dsn)  # noqa: E731
    opened: list[ProfileStore] = []

    def open_() -> ProfileStore:
        store = factory()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture()
def store(open_store: OpenStore) -> ProfileStore:
    return open_store()


def member(member_id: str, **identities: list[str]) -> Member:
    return Member(id=member_id, identities=identities)


messages = itertools.count()


def record(member_id: str, timestamp: int, value: str = "x@example.com", action: str = "link",
           **extra: Any) -> IdentityRecord:
    return IdentityRecord(member_id, action, f"msg-{next(messages)}", timestamp, "email", value, **extra)


def index(store: ProfileStore) -> dict[str, str | None]:
    """The identifier index as ``owner`` answers it, for every identifier of every committed member."""
    return {key: store.owner(key) for m in store.load().members for key in member_keys(m.identities)}


def expected_index(store: ProfileStore) -> dict[str, str]:
    """The index derived from the committed members (each identifier held by one member)."""
    return {key: m.id for m in store.load().members for key in member_keys(m.identities)}


def state(store: ProfileStore) -> State:
    """The committed state, comparable with ``==``: offset, identities by member, profiles."""
    snapshot = store.load()
    identities = {m.id: m.identities for m in snapshot.members}
    assert len(identities) == len(snapshot.members), "a member id loaded twice"
    return snapshot.offset, identities, snapshot.profiles


BASELINE = Changes(
    offset=40,
    members=[member("u-1", user_id=["u-1"], email=["a@example.com", "b@example.com"]),
             member("anon:a-2", anonymous_id=["a-2"])],
    profiles={"u-1": b"\x00profile one\xff", "anon:a-2": b"profile two"},
    history=[record("u-1", 5, "a@example.com"), record("anon:a-2", 6, "a-2")],
)


def test_a_new_store_is_empty(store: ProfileStore) -> None:
    assert state(store) == (0, {}, {})
    assert list(store.iter_profiles()) == []
    assert store.history("u-1") == []


def test_commit_then_load_round_trips_members_profiles_and_offset(store: ProfileStore) -> None:
    store.commit(BASELINE)
    assert state(store) == (
        40,
        {"u-1": {"user_id": ["u-1"], "email": ["a@example.com", "b@example.com"]}, "anon:a-2": {"anonymous_id": ["a-2"]}},
        {"u-1": b"\x00profile one\xff", "anon:a-2": b"profile two"},
    )
    # A later commit replaces what it names and keeps the rest.
    store.commit(Changes(offset=41, members=[member("u-1", user_id=["u-1"], card=["c-9"])],
                         profiles={"u-1": b"", "u-3": b"three"}))
    offset, identities, profiles = state(store)
    assert offset == 41
    assert identities == {"u-1": {"user_id": ["u-1"], "card": ["c-9"]}, "anon:a-2": {"anonymous_id": ["a-2"]}}
    assert profiles == {"u-1": b"", "anon:a-2": b"profile two", "u-3": b"three"}
    # An empty batch still moves the offset.
    store.commit(Changes(offset=57))
    assert state(store) == (57, identities, profiles)


def test_removals_apply_before_writes(store: ProfileStore) -> None:
    store.commit(BASELINE)
    store.commit(Changes(offset=50, removed_members=["anon:a-2", "never-stored"],
                         removed_profiles=["anon:a-2", "u-1", "never-stored"],
                         profiles={"u-1": b"written again"}))
    assert state(store) == (50, {"u-1": {"user_id": ["u-1"], "email": ["a@example.com", "b@example.com"]}},
                            {"u-1": b"written again"})


def test_renamed_refiles_the_history_under_the_new_id(store: ProfileStore) -> None:
    early, late = record("anon:a-2", 10, "a-2"), record("anon:a-2", 30, "d-1")
    store.commit(Changes(offset=1, members=[member("anon:a-2", anonymous_id=["a-2"])], history=[early, late]))
    merge = record("u-1", 20, "a-2", action="merge", other_id="anon:a-2")
    store.commit(Changes(offset=2, members=[member("u-1", user_id=["u-1"], anonymous_id=["a-2"])],
                         removed_members=["anon:a-2"], renamed={"anon:a-2": "u-1"}, history=[merge]))
    assert store.history("anon:a-2") == []
    assert store.history("u-1") == [msgspec.structs.replace(early, member_id="u-1"), merge,
                                    msgspec.structs.replace(late, member_id="u-1")]


def test_history_is_ordered_by_timestamp_then_insertion(store: ProfileStore) -> None:
    first = [record("anon:a-1", 7, "first"), record("u-1", 3, "second"), record("u-1", 7, "third")]
    store.commit(Changes(offset=1, history=first))
    rejected = record("u-1", 3, "fourth", action="rejected", reason="limit of 5 email")
    store.commit(Changes(offset=2, history=[record("u-1", 7, "fifth"), rejected, record("other", 1)]))
    # Renaming rewrites "first" after the others were written; it still sorts by insertion.
    store.commit(Changes(offset=3, renamed={"anon:a-1": "u-1"}))
    assert [r.value for r in store.history("u-1")] == ["second", "fourth", "first", "third", "fifth"]
    assert store.history("u-1")[1] == rejected


def test_history_keeps_any_identifier_value_a_client_sent(store: ProfileStore) -> None:
    # Ingest refuses NUL in ids, not in traits: a trait's email may carry one.
    values = ["a\x00b@example.com", "zoë@exämple.com", "🐕@example.com", ""]
    store.commit(Changes(offset=1, members=[member("u-1", email=values)],
                         history=[record("u-1", n, value) for n, value in enumerate(values)]))
    assert [r.value for r in store.history("u-1")] == values
    assert state(store)[1] == {"u-1": {"email": values}}


def test_a_batch_of_5000_profiles_round_trips_and_iter_profiles_returns_every_one(store: ProfileStore) -> None:
    noise = random.Random(5)
    profiles = {f"member-{n:05d}": noise.randbytes(1_500) for n in range(5_000)}
    members = [member(member_id, user_id=[member_id]) for member_id in profiles]
    store.commit(Changes(offset=5_000, members=members, profiles=profiles))
    assert list(store.iter_profiles()) == sorted(profiles.items())
    offset, identities, loaded = state(store)
    assert (offset, len(identities), loaded) == (5_000, 5_000, profiles)


def test_reset_forgets_everything(store: ProfileStore) -> None:
    store.commit(BASELINE)
    store.reset()
    assert state(store) == (0, {}, {})
    assert list(store.iter_profiles()) == []
    assert store.history("u-1") == []
    store.commit(Changes(offset=3, profiles={"u-9": b"after"}, history=[record("u-9", 1)]))
    assert state(store) == (3, {}, {"u-9": b"after"})
    assert len(store.history("u-9")) == 1


def test_erase_member_removes_exactly_that_member(store: ProfileStore, tmp_path: Path) -> None:
    store.commit(BASELINE)
    store.erase_member("u-1")
    offset, identities, profiles = state(store)
    assert offset == 40 and set(identities) == set(profiles) == {"anon:a-2"}
    assert store.history("u-1") == [] and len(store.history("anon:a-2")) == 1
    store.erase_member("nobody")  # erasing twice, or someone unknown, is harmless
    if isinstance(store, SqliteProfileStore):
        files = list((tmp_path / "data").glob("profiles.db*"))
        assert files
        for file in files:
            assert b"profile one" not in file.read_bytes() and b"a@example.com" not in file.read_bytes()


class Interrupting(Sequence[IdentityRecord]):
    """History records that call ``interrupt`` once the first has been read: the commit's
    earlier statements have run by then, so what follows is a failure part-way."""

    def __init__(self, records: list[IdentityRecord], interrupt: Callable[[], None]) -> None:
        self._records = records
        self._interrupt = interrupt

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: Any) -> Any:
        return self._records[index]

    def __iter__(self) -> Iterator[IdentityRecord]:
        yield self._records[0]
        self._interrupt()
        yield from self._records[1:]


def doomed_changes(history: Sequence[IdentityRecord]) -> Changes:
    """A batch touching every table: it must leave no trace when it fails."""
    return Changes(offset=99, members=[member("u-1", user_id=["u-1"], email=["new@example.com"]),
                                       member("u-5", user_id=["u-5"])],
                   removed_members=["anon:a-2"], removed_profiles=["anon:a-2"],
                   profiles={"u-1": b"changed", "u-5": b"new"}, renamed={"anon:a-2": "u-1"}, history=history)


def assert_baseline_intact_and_store_usable(store: ProfileStore, before: State) -> None:
    assert state(store) == before
    assert index(store) == expected_index(store) and store.owner("email:new@example.com") is None
    assert [r.value for r in store.history("u-1")] == ["a@example.com"]
    assert [r.value for r in store.history("anon:a-2")] == ["a-2"]
    store.commit(Changes(offset=100, profiles={"u-5": b"fine"}))
    assert state(store)[0] == 100


def test_a_commit_refused_part_way_changes_nothing(store: ProfileStore) -> None:
    store.commit(BASELINE)
    before = state(store)
    refused = doomed_changes([record("u-1", 9)])
    refused.profiles["u-6"] = None  # type: ignore[assignment]  # every table refuses a NULL profile
    with pytest.raises(StorageUnavailable):
        store.commit(refused)
    assert_baseline_intact_and_store_usable(store, before)


def test_a_commit_interrupted_between_statements_changes_nothing(store: ProfileStore) -> None:
    store.commit(BASELINE)
    before = state(store)

    def crash() -> None:
        raise RuntimeError("killed mid-commit")

    with pytest.raises(RuntimeError, match="killed mid-commit"):
        store.commit(doomed_changes(Interrupting([record("u-1", 9), record("u-1", 10)], crash)))
    assert_baseline_intact_and_store_usable(store, before)


def test_reopening_sees_the_committed_state(open_store: OpenStore) -> None:
    first = open_store()
    first.commit(BASELINE)
    expected = state(first)
    history = first.history("u-1")
    first.close()
    reopened = open_store()
    assert state(reopened) == expected
    assert reopened.history("u-1") == history
    reopened.commit(Changes(offset=41, profiles={"u-1": b"next"}))
    assert state(open_store())[0] == 41


def test_the_later_commit_of_two_stores_wins_and_both_see_it(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    first.commit(BASELINE)
    second.commit(Changes(offset=45, members=[member("u-1", user_id=["u-1"])], profiles={"u-1": b"second"}))
    expected = (45, {"u-1": {"user_id": ["u-1"]}, "anon:a-2": {"anonymous_id": ["a-2"]}},
                {"u-1": b"second", "anon:a-2": b"profile two"})
    assert state(first) == state(second) == expected


def test_a_commit_waits_for_another_stores_commit_in_progress(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    first.commit(BASELINE)
    second.load()  # connected before the race
    later = Changes(offset=45, members=[member("u-7", user_id=["u-7"])], profiles={"u-7": b"later"})
    second_commit = threading.Thread(target=second.commit, args=(later,))

    def race_the_second_store() -> None:
        second_commit.start()
        second_commit.join(0.5)
        assert second_commit.is_alive(), "a commit ran while another store's commit was in progress"

    first.commit(Changes(offset=44, members=[member("u-6", user_id=["u-6"])], profiles={"u-6": b"earlier"},
                         history=Interrupting([record("u-6", 1), record("u-6", 2)], race_the_second_store)))
    second_commit.join()
    offset, identities, profiles = state(first)
    assert offset == 45
    assert {"u-6", "u-7"} <= set(identities) and (profiles["u-6"], profiles["u-7"]) == (b"earlier", b"later")


def test_concurrent_commits_of_two_stores_never_mix(open_store: OpenStore) -> None:
    stores = {"left": open_store(), "right": open_store()}
    rounds, keys = 10, [f"m-{n:02d}" for n in range(40)]
    start = threading.Barrier(len(stores))
    errors: list[Exception] = []

    def writer(name: str, store: ProfileStore) -> None:
        start.wait()
        order = keys if name == "left" else keys[::-1]  # opposite orders: deadlock-prone without serialising
        try:
            for n in range(1, rounds + 1):
                tag = f"{name}-{n}"
                store.commit(Changes(offset=n, members=[member(k, email=[tag]) for k in order],
                                     profiles={k: tag.encode() for k in order}, history=[record("x", n, tag)]))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=item) for item in stores.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    offset, identities, profiles = state(open_store())
    tags = {tuple(i["email"]) for i in identities.values()} | {(p.decode(),) for p in profiles.values()}
    assert len(tags) == 1, f"one commit's rows mixed with another's: {tags}"
    (tag,) = tags.pop()
    assert tag.endswith(f"-{rounds}") and offset == rounds
    assert len(stores["left"].history("x")) == 2 * rounds


ids = st.sampled_from(["a", "b", "c", "d"])
changes_strategy = st.builds(
    Changes,
    offset=st.integers(0, 2**62),
    # Each identifier belongs to one member id, as the identity graph guarantees.
    members=st.lists(ids.flatmap(lambda member_id: st.builds(
        member, st.just(member_id), email=st.lists(st.text(max_size=6).map(lambda t: f"{member_id}/{t}"), max_size=2))),
        max_size=3),
    removed_members=st.lists(ids, max_size=2),
    profiles=st.dictionaries(ids, st.binary(max_size=24), max_size=3),
    removed_profiles=st.lists(ids, max_size=2),
    renamed=st.dictionaries(ids, ids, max_size=2),
    history=st.lists(st.builds(record, ids, st.integers(0, 3), st.text(max_size=6)), max_size=3),
)


class Model:
    """The contract as plain Python: each commit's steps, in the documented order."""

    def __init__(self) -> None:
        self.offset = 0
        self.identities: dict[str, dict[str, list[str]]] = {}
        self.profiles: dict[str, bytes] = {}
        self.history: list[IdentityRecord] = []

    def commit(self, changes: Changes) -> None:
        for member_id in changes.removed_members:
            self.identities.pop(member_id, None)
        for member_id in changes.removed_profiles:
            self.profiles.pop(member_id, None)
        self.identities.update((m.id, m.identities) for m in changes.members)
        self.profiles.update(changes.profiles)
        for old, new in changes.renamed.items():
            self.history = [msgspec.structs.replace(r, member_id=new) if r.member_id == old else r
                            for r in self.history]
        self.history.extend(changes.history)
        self.offset = changes.offset

    def history_of(self, member_id: str) -> list[IdentityRecord]:
        return sorted((r for r in self.history if r.member_id == member_id), key=lambda r: r.timestamp)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(changes_strategy, min_size=1, max_size=4))
def test_any_sequence_of_commits_matches_the_model(store: ProfileStore, batches: list[Changes]) -> None:
    store.reset()  # examples share the store
    model = Model()
    for changes in batches:
        store.commit(changes)
        model.commit(changes)
        assert state(store) == (model.offset, model.identities, model.profiles)
        assert index(store) == expected_index(store)
        assert store.owner("email:a/") in (None, "a") and store.owner("email:nobody") is None
        for member_id in "abcd":
            assert store.history(member_id) == model.history_of(member_id)
    assert list(store.iter_profiles()) == sorted(model.profiles.items())


def test_the_identifier_index_follows_members_written_removed_and_merged(store: ProfileStore) -> None:
    store.commit(BASELINE)
    assert index(store) == expected_index(store) == {
        "user_id:u-1": "u-1", "email:a@example.com": "u-1", "email:b@example.com": "u-1", "anonymous_id:a-2": "anon:a-2"}
    assert store.owner("email:c@example.com") is None and store.owner("a@example.com") is None
    # A merge: the absorbed member is removed and its identifiers point at the survivor.
    store.commit(Changes(offset=41, removed_members=["anon:a-2"], renamed={"anon:a-2": "u-1"},
                         members=[member("u-1", user_id=["u-1"], email=["a@example.com", "b@example.com"],
                                         anonymous_id=["a-2"])]))
    assert store.owner("anonymous_id:a-2") == "u-1"
    # A member written without an identifier it held no longer owns it; one written again unchanged keeps all.
    store.commit(Changes(offset=42, members=[member("u-1", user_id=["u-1"], anonymous_id=["a-2"], card=["c-9"]),
                                             member("u-3", email=["b@example.com"])]))
    assert store.owner("email:a@example.com") is None and store.owner("card:c-9") == "u-1"
    assert store.owner("email:b@example.com") == "u-3"
    store.commit(Changes(offset=43, members=[member("u-3", email=["b@example.com"])]))
    assert index(store) == expected_index(store) and len(index(store)) == 4
    # An anonymous member renamed (its smallest anonymous id changed): same identifiers, new id.
    store.commit(Changes(offset=44, members=[member("anon:a-0", anonymous_id=["a-0", "a-7"])]))
    store.commit(Changes(offset=45, removed_members=["anon:a-0"], renamed={"anon:a-0": "anon:a-00"},
                         members=[member("anon:a-00", anonymous_id=["a-0", "a-00", "a-7"])]))
    assert store.owner("anonymous_id:a-7") == "anon:a-00" and store.member("anon:a-0") is None
    assert index(store) == expected_index(store)


def test_members_owning_loads_each_owner_once_with_all_its_identifiers(store: ProfileStore) -> None:
    many = [member(f"m-{n:04d}", user_id=[f"m-{n:04d}"], email=[f"{n}@example.com", f"{n}@example.org"])
            for n in range(1_200)]
    store.commit(Changes(offset=1, members=[*many, member("anon:a-2", anonymous_id=["a-2"])]))
    assert store.members_owning([]) == []
    assert store.members_owning(["email:nobody@example.com", "a@example.com"]) == []
    wanted = ["email:7@example.com", "user_id:m-0007", "email:7@example.org", "anonymous_id:a-2", "card:none"]
    loaded = sorted(store.members_owning(wanted), key=lambda m: m.id)
    assert loaded == [member("anon:a-2", anonymous_id=["a-2"]), many[7]]
    # More keys than one statement binds (every key of every member, in an order that mixes them).
    keys = [key for m in reversed(many) for key in member_keys(m.identities)]
    assert sorted(store.members_owning(keys), key=lambda m: m.id) == many
    assert store.member("m-0003") == many[3] and store.member("nobody") is None


def test_erase_and_reset_empty_the_identifier_index(store: ProfileStore) -> None:
    store.commit(BASELINE)
    store.erase_member("u-1")
    assert [store.owner(key) for key in ("user_id:u-1", "email:a@example.com", "email:b@example.com")] == [None] * 3
    assert store.owner("anonymous_id:a-2") == "anon:a-2" and store.members_owning(["email:a@example.com"]) == []
    assert store.member("u-1") is None
    store.reset()
    assert store.owner("anonymous_id:a-2") is None and store.members_owning(["anonymous_id:a-2"]) == []


def test_a_store_from_before_the_index_gets_it_built_when_opened(open_store: OpenStore, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    first = open_store()
    first.commit(BASELINE)
    expected = expected_index(first)
    first.close()
    if isinstance(first, SqliteProfileStore):  # as written by a version without the table
        import sqlite3

        with sqlite3.connect(first.path) as db:
            db.execute("DROP TABLE identifiers")
    else:
        import psycopg

        with psycopg.connect(request.getfixturevalue("postgres_dsn"), autocommit=True) as db:
            db.execute("DROP TABLE member_identifiers")
            db.execute("UPDATE profile_store_state SET schema_version = 1")
    reopened = open_store()
    assert index(reopened) == expected and len(expected) == 4
    reopened.commit(Changes(offset=41, members=[member("u-5", email=["e@example.com"])]))
    assert reopened.owner("email:e@example.com") == "u-5"


# -- one backend at a time -----------------------------------------------------------------


def test_sqlite_load_reads_one_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "profiles.db"
    reader, writer = SqliteProfileStore(path), SqliteProfileStore(path)
    writer.commit(Changes(offset=1, members=[member("m-1")], profiles={"m-1": b"1"}))

    def commit_between_reads(statement: str) -> None:
        if statement.startswith("SELECT member_id, identities"):
            reader._db.set_trace_callback(None)
            writer.commit(Changes(offset=2, members=[member("m-2")], profiles={"m-2": b"2"}))

    reader._db.set_trace_callback(commit_between_reads)
    assert state(reader) == (1, {"m-1": {}}, {"m-1": b"1"})
    assert state(reader) == (2, {"m-1": {}, "m-2": {}}, {"m-1": b"1", "m-2": b"2"})
    reader.close()
    writer.close()


@pytest.mark.postgres
def test_postgres_commit_cut_off_by_a_lost_connection_changes_nothing(postgres_dsn: str) -> None:
    import psycopg

    from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

    store = PostgresProfileStore(postgres_dsn)
    store.commit(BASELINE)
    before = state(store)

    def terminate_the_store_backend() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
        assert killed == [(True,)]

    with pytest.raises(StorageUnavailable):
        store.commit(doomed_changes(Interrupting([record("u-1", 9), record("u-1", 10)],
                                                 terminate_the_store_backend)))
    assert_baseline_intact_and_store_usable(store, before)  # the same object reconnects
    store.close()


@pytest.mark.postgres
def test_postgres_refuses_a_store_from_a_newer_version(postgres_dsn: str) -> None:
    import psycopg

    from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

    created = PostgresProfileStore(postgres_dsn)
    created.load()
    created.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("UPDATE profile_store_state SET schema_version = 99")
    with pytest.raises(StorageUnavailable, match="schema version 99"):
        PostgresProfileStore(postgres_dsn).load()


def test_postgres_unreachable_is_storage_unavailable_on_first_use() -> None:
    from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

    store = PostgresProfileStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StorageUnavailable, match="cannot connect"):
        store.load()


@pytest.mark.postgres
def test_bootstrap_opens_the_store_the_settings_name(tmp_path: Path, postgres_dsn: str) -> None:
    from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

    embedded = open_profile_store(Settings(data_dir=tmp_path))
    assert isinstance(embedded, SqliteProfileStore) and embedded.path == tmp_path / "profiles.db"
    embedded.close()
    scaled = open_profile_store(Settings(data_dir=tmp_path, storage="postgres", postgres_dsn=postgres_dsn))
    assert isinstance(scaled, PostgresProfileStore)
    assert state(scaled) == (0, {}, {})
    scaled.close()


# -- the processor over each backend ---------------------------------------------------------


def simulated_events() -> list[Event]:
    return [
        normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                  default_message_id=f"gen-{n}")
        for n, call in enumerate(simulate(members=30, days=60, seed=3))
    ]


def process_with_a_restart(log: EventLog, open_: OpenStore, events: list[Event]) -> ProfileStore:
    """Half the events, a processor restarted from the store, then the rest."""
    half = len(events) // 2
    log.append(events[:half])
    first = Processor(log, open_(), batch_size=300)
    first.catch_up()
    first.close()
    log.append(events[half:])
    store = open_()
    Processor(log, store, batch_size=300).catch_up()
    return store


@pytest.mark.postgres
def test_the_processor_over_postgres_gives_the_profiles_it_gives_over_sqlite(
    tmp_path: Path, postgres_dsn: str
) -> None:
    from loyalty_cdp.adapters.eventlog.postgres import PostgresEventLog
    from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

    events = simulated_events()
    sqlite_log, postgres_log = SqliteEventLog(tmp_path / "events.db"), PostgresEventLog(postgres_dsn)
    results = [
        process_with_a_restart(sqlite_log, lambda: SqliteProfileStore(tmp_path / "profiles.db"), events),
        process_with_a_restart(postgres_log, lambda: PostgresProfileStore(postgres_dsn), events),
    ]
    decode = msgspec.msgpack.Decoder(Profile).decode
    on_sqlite, on_postgres = ({m: decode(blob) for m, blob in store.iter_profiles()} for store in results)
    assert len(on_sqlite) >= 30
    assert on_postgres == on_sqlite
    (sqlite_offset, sqlite_graph, _), (postgres_offset, postgres_graph, _) = (state(s) for s in results)
    assert postgres_graph == sqlite_graph
    assert index(results[1]) == index(results[0]) == expected_index(results[0])
    assert (sqlite_offset, postgres_offset) == (sqlite_log.last_offset(), postgres_log.last_offset())
    for member_id in sqlite_graph:
        assert results[1].history(member_id) == results[0].history(member_id)
    assert any(results[0].history(m) for m in sqlite_graph)
    for closing in (*results, sqlite_log, postgres_log):
        closing.close()
