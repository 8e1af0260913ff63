"""Text search over interactions (search_interactions, the web UI's samples view).

It answers with the rows, in the order, of a full scan with positionCaseInsensitiveUTF8 over the
prompt, the prompt messages and the completion, whatever the text's case, script or LIKE
characters, page or redelivered copies; the text_ngrams index of migration 0007 only lets it skip
the granules (8,192 rows) that cannot hold the text, also for rows stored before the migration.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwire.analysis.queries import get_query, run_query
from trainwire.config import Settings
from trainwire.events import Event, Interaction
from trainwire.store import migrations
from trainwire.store.clickhouse import Store, open_store

T0 = datetime(2026, 3, 1, tzinfo=UTC)

# prompt (text, or chat messages), completion; one interaction each, newest last
TEXTS: list[tuple[str | list[dict[str, str]], str]] = [
    ("Why is the SKY blue?", "Rayleigh scattering."),
    ("why is the sky blue", "because"),
    ("Café au lait", "CAFÉ AU LAIT, s'il vous plaît"),
    ("Die Straße", "STRASSE is ß as SS"),
    ("Capital ẞ", "lower ß"),
    ("ΣΟΦΙΑ", "σοφια and final ς"),
    ("İstanbul", "ıi"),
    ("100% sure", "a_b and a\\b"),
    ("日本語のテキスト", "emoji 🙂 here"),
    ([{"role": "user", "content": "Chat about the BLUE sky"}], "messages only"),
    ("line one\nline two", "split across\nlines"),
]

# each needle with what it documents; the expected rows are given as indexes into TEXTS
DOCUMENTED: list[tuple[str, set[int]]] = [
    ("sky blue", {0, 1}),  # ASCII letters in any case
    ("BLUE SKY", {9}),  # in the prompt messages too (a chat prompt)
    ("café", {2}),  # a non-ASCII letter matches its other case: é = É
    ("strasse", {3}),  # no folding of one letter into several: ß != SS
    ("ß", {3, 4}),  # ẞ (capital sharp s) = ß
    ("σοφια", {5}),  # Greek Σ = σ; ς is a letter of its own
    ("%", {7}),  # LIKE's % and _ and \ are plain characters
    ("a_b", {7}),
    ("a\\b", {7}),
    ("日本語", {8}),
    ("🙂", {8}),
    ("line two", {10}),
    ("two\nsplit", set()),  # the prompt and the completion are searched apart
    ("scattering.", {0}),
]


def _events(texts: list[tuple[str | list[dict[str, str]], str]], run: str = "search") -> list[Event]:
    return [
        Event(
            run_id=run,
            ts=T0 + timedelta(seconds=i // 2),  # pairs share a time: their order is by event_id
            payload=Interaction(prompt=prompt, completion=completion, reward=float(i), step=i),
        )
        for i, (prompt, completion) in enumerate(texts)
    ]


def searched(store: Store, text: str, **filters: object) -> list[str]:
    """The event ids search_interactions answers for ``text``, in its order (one page of 10,000)."""
    rows = run_query(store, "search_interactions", text=text, limit=10_000, **filters).to_pylist()
    return [row["event_id"] for row in rows]


def full_scan(store: Store, text: str) -> list[str]:
    """What a search for ``text`` must answer: every interaction that holds it, no index used."""
    rows = store.query_rows(
        "SELECT event_id FROM interactions FINAL"
        " WHERE positionCaseInsensitiveUTF8(prompt, {text:String}) > 0"
        " OR positionCaseInsensitiveUTF8(prompt_messages, {text:String}) > 0"
        " OR positionCaseInsensitiveUTF8(completion, {text:String}) > 0"
        " ORDER BY ts DESC, event_id SETTINGS use_skip_indexes = 0",
        {"text": text},
    )
    return [row["event_id"] for row in rows]


def granules_read(store: Store, text: str) -> tuple[int, int]:
    """(granules of interactions that a search for ``text`` reads, granules in all), from its plan."""
    query = get_query("search_interactions")
    rows = store.query_rows("EXPLAIN indexes = 1 " + query.sql, query.bind({"text": text}))
    plan = "\n".join(row["explain"] for row in rows)
    step = plan[plan.index("ReadFromMergeTree (trainwire.interactions)") :]
    next_step = step.find("ReadFrom", 1)
    step = step if next_step < 0 else step[:next_step]
    total = int(re.search(r"Granules: \d+/(\d+)", step)[1])  # before any index
    read = re.search(r"Parts: \d+ \| Granules: (\d+)", step)  # ClickHouse 26.x prints what it reads
    if read is None:  # 25.8 prints the selection after each index, the last one is what it reads
        return int(re.findall(r"Granules: (\d+)/\d+", step)[-1]), total
    return int(read[1]), total


class Stored(NamedTuple):
    """A store holding TEXTS, and the event id of each text."""

    store: Store
    ids: list[str]


@pytest.fixture
def stored(embedded_settings: Settings):
    with open_store(embedded_settings) as store:
        store.migrate()
        events = _events(TEXTS)
        store.insert_events(events)
        store.insert_events([*events[:3], events[-1]])  # redelivered (the oldest and the newest): one row each
        yield Stored(store, [e.event_id for e in events])


def test_a_search_finds_what_it_documents_as_a_full_scan_does(stored: Stored) -> None:
    for text, expected in DOCUMENTED:
        found = searched(stored.store, text)
        assert found == full_scan(stored.store, text), text
        assert set(found) == {stored.ids[i] for i in expected}, text


def test_the_index_never_rules_out_a_kelvin_sign_for_a_k(embedded_settings: Settings) -> None:
    # positionCaseInsensitiveUTF8 matches k to the Kelvin sign (U+212A) in some blocks of rows and
    # not in others (ClickHouse 25.8 and 26.9; the query's description says so): the index must keep
    # each granule where a k of the text may stand for one, as if the text had no k there
    with open_store(embedded_settings) as store:
        store.migrate()
        _fill_granules(store)
        store.insert_events(_events([("the end is xy\u212a", "")], run="kelvin"))
        read, total = granules_read(store, "the end is XYK")
        assert read == granules_read(store, "the end is xy")[0] > 0
        assert read < total


def test_other_filters_and_pages_keep_the_full_scans_order(stored: Stored) -> None:
    store = stored.store
    everything = full_scan(store, "s")
    assert len(everything) > 6
    assert searched(store, "s") == everything
    page = run_query(store, "search_interactions", text="S", limit=3, offset=2).to_pylist()
    assert [row["event_id"] for row in page] == everything[2:5]
    newest = run_query(store, "search_interactions", text="LINE", limit=1).to_pylist()  # redelivered
    assert [row["event_id"] for row in newest] == everything[:1] == [stored.ids[-1]]
    in_range = searched(store, "s", reward_min=2.0, reward_max=6.0)
    rewards = dict(zip(stored.ids, range(len(TEXTS)), strict=True))
    assert in_range == [e for e in everything if 2 <= rewards[e] <= 6]


_ALPHABET = "abkKsSxyzé É ß ẞ Σσς İıi%_\\\n日"  # not the Kelvin sign: see the test above


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=_ALPHABET, min_size=1, max_size=8),
    haystack=st.integers(min_value=0, max_value=len(TEXTS) - 1),
    start=st.integers(min_value=0, max_value=40),
    length=st.integers(min_value=1, max_value=12),
    swap_case=st.booleans(),
)
def test_any_text_gives_the_rows_of_a_full_scan(
    stored: Stored, text: str, haystack: int, start: int, length: int, swap_case: bool
) -> None:
    store = stored.store
    prompt, completion = TEXTS[haystack]
    source = prompt if isinstance(prompt, str) else completion
    piece = source[start : start + length] or source[:length]
    for needle in (text, piece.swapcase() if swap_case else piece):
        assert searched(store, needle) == full_scan(store, needle), repr(needle)


def _fill_granules(store: Store) -> None:
    """Four granules of run ``bulk`` without the word zebra, then a few rows of run ``zoo`` with it."""
    store.command(
        "INSERT INTO interactions (event_id, run_id, ts, schema_version, source_host, source_process,"
        " source_library, prompt, prompt_messages, completion, rewards, success, step, metadata)"
        " SELECT concat('bulk-', leftPad(toString(number), 6, '0')), if(number < 32768, 'bulk', 'zoo'),"
        " toDateTime64('2026-03-01 00:00:00', 6, 'UTC') + toIntervalSecond(number), 1, 'h', 1, 'test',"
        " concat('Question ', toString(number), ': why is the sky blue?'), '',"
        " if(number < 32768, 'The answer is light.', 'A ZEBRA crossing.'), map(), true, intDiv(number, 64), '{}'"
        " FROM numbers(32800)"
    )


def test_the_index_skips_the_granules_without_the_text(embedded_settings: Settings) -> None:
    with open_store(embedded_settings) as store:
        store.migrate()
        _fill_granules(store)
        read, total = granules_read(store, "Zebra Crossing 99")  # found nowhere
        assert total >= 5 and read < total  # the four granules of run bulk are skipped
        assert searched(store, "Zebra Crossing 99") == full_scan(store, "Zebra Crossing 99") == []
        assert searched(store, "Zebra Crossing") == full_scan(store, "Zebra Crossing")
        assert len(full_scan(store, "zebra crossing")) == 32
        assert granules_read(store, "qqq") == (total, total)  # shorter than an n-gram: nothing to rule out


def test_the_migration_builds_the_index_for_rows_already_stored(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrations.available_migrations()
    with open_store(embedded_settings) as store:
        # a store an older release made: its migrations only (the shipped list cut before 0007)
        monkeypatch.setattr(migrations, "available_migrations", lambda: [m for m in shipped if m.version < 7])
        store.migrate()
        _fill_granules(store)  # stored before migration 0007
        monkeypatch.setattr(migrations, "available_migrations", lambda: shipped)
        assert "0007_text_search" in store.migrate()
        _wait_for_mutations(store)
        read, total = granules_read(store, "zebra crossing 99")
        assert read < total
        assert searched(store, "zebra crossing") == full_scan(store, "zebra crossing")


def _wait_for_mutations(store: Store) -> None:
    """Wait until the store's mutations (MATERIALIZE INDEX runs as one) are done, 120 s at most."""
    deadline = time.monotonic() + 120
    while store.query_rows(
        "SELECT count() AS n FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"
    )[0]["n"]:
        assert time.monotonic() < deadline, "MATERIALIZE INDEX did not finish"
        time.sleep(0.2)
