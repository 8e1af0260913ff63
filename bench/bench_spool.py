"""Spool size while the bus is down: 1 M events of about 1 KB, compressed blocks vs the records uncompressed.

The emitter publishes to a Kafka address nothing listens on, so every event goes to its spool.
The events are GRPO interactions (groups of 8 completions share a prompt) whose text is drawn
word by word with the word frequencies of the top-level README, so it compresses about as English
does (a text of repeated characters would make any compressor look good). The uncompressed
figure is what the spool held before it was compressed: the same messages framed one record each.

    python bench/bench_spool.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import socket
import tempfile
import time
from pathlib import Path

from table import print_table

from trainwire.bus import Emitter
from trainwire.bus.base import frame
from trainwire.bus.publisher import event_message
from trainwire.config import Settings
from trainwire.events import Event, Interaction


def english_like(rng: random.Random, vocabulary: list[str], weights: list[int], chars: int) -> str:
    """``chars`` characters of words drawn with the README's word frequencies."""
    return " ".join(rng.choices(vocabulary, weights, k=chars // 4))[:chars]


def interactions(count: int) -> list[Event]:
    """``count`` interactions of about 1 KB encoded, in groups of 8 sharing a prompt."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    words = collections.Counter(re.findall(r"[A-Za-z]+|[.,:;()]", readme))
    vocabulary, weights = list(words), list(words.values())
    rng = random.Random(0)
    events = []
    for i in range(count):
        if i % 8 == 0:
            prompt = english_like(rng, vocabulary, weights, 120)
        completion = english_like(rng, vocabulary, weights, 700)
        events.append(Event(f"run-{i % 4}", Interaction(prompt=prompt, completion=completion, reward=rng.random())))
    return events


def unused_port() -> int:
    """A local TCP port nothing listens on (so the bus is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    """Spool the events and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    events = interactions(args.events)
    uncompressed = sum(len(frame(event_message("trainwire", e), 0)) for e in events)
    with tempfile.TemporaryDirectory() as tmp:
        emitter = Emitter(Settings(kafka=f"127.0.0.1:{unused_port()}", data_dir=Path(tmp)))
        started = time.perf_counter()
        for event in events:
            emitter.emit(event)
        emitter.close()
        elapsed = time.perf_counter() - started
        stats = emitter.stats()
        assert stats.spooled == args.events and stats.spool_pending == args.events, stats
        spooled = emitter.spool_path.stat().st_size
    load = os.getloadavg()
    rows = [
        ["records uncompressed (before)", f"{uncompressed / 1e9:.3f}", round(uncompressed / args.events), "100%", "-"],
        [
            "zstd blocks (now)",
            f"{spooled / 1e9:.3f}",
            round(spooled / args.events),
            f"{spooled / uncompressed:.0%}",
            round(elapsed, 1),
        ],
    ]
    print_table(
        f"Spool of {args.events:,} interactions while the bus is down (load average {load[0]:.1f}, {load[1]:.1f})",
        ["spool", "GB", "bytes/event", "of uncompressed", "emit..close s"],
        rows,
    )


if __name__ == "__main__":
    main()
