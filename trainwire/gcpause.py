"""Pausing Python's cyclic garbage collector around batch work.

A worker's batches (the records of a poll, the Arrow conversion at a flush) create many objects
that live until the batch is done and form no cycles, so reference counting frees them. The
collections their allocations trigger meanwhile find nothing to free and traverse them, and
everything else alive, again and again: a quarter of a worker's time per record before the
batches paused the collector. Paused, the batch leaves one collection behind it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector within the block (nested uses keep it paused)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
