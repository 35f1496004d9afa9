"""An event trigger that tells Airflow when something lands in a folder, and never touches it.

``ct_ingest`` is scheduled on assets whose ``AssetWatcher`` runs this trigger in the triggerer, so
a batch or a label file starts ingest within seconds of landing instead of at the next cron tick.
The standard provider's file triggers delete what they see; ingest must read the file, so this
one only looks.

It lives in the plugins folder because the triggerer imports triggers by module path and has
the plugins folder on ``sys.path`` (not the DAGs folder). It imports nothing of ctrain: the
triggerer runs it in an event loop, where a blocking import would stall every other trigger.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

# Size and modification time: an entry whose signature stays the same between two looks has
# finished arriving (writers that do not rename into place are seen once they stop writing).
Signature = tuple[int, float]


def look(directory: str) -> dict[str, Signature]:
    """The entries waiting in ``directory``, as ingest lists them: every name but hidden ones
    (``.name``: an upload in flight), files or not, so ingest can say what it did with each."""
    out: dict[str, Signature] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # taken away between the listing and the look
                    continue
                out[entry.name] = (st.st_size, st.st_mtime)
    except FileNotFoundError:  # not created yet: nothing has landed
        pass
    return out


class Arrivals:
    """Which entries are new and settled, look after look: each name is announced once while it
    stays; one that leaves and lands again is announced again."""

    def __init__(self, settle_looks: int = 1):
        self.settle_looks = settle_looks
        self.announced: set[str] = set()
        self.settling: dict[str, tuple[Signature, int]] = {}

    def update(self, seen: dict[str, Signature]) -> list[str]:
        """The names to announce after a look that saw ``seen``."""
        self.announced &= seen.keys()
        self.settling = {n: v for n, v in self.settling.items() if n in seen}
        ready = []
        for name in sorted(seen.keys() - self.announced):
            before = self.settling.get(name)
            steady = before[1] + 1 if before and before[0] == seen[name] else 0
            if steady >= self.settle_looks:
                self.settling.pop(name, None)
                self.announced.add(name)
                ready.append(name)
            else:
                self.settling[name] = (seen[name], steady)
        return ready


class LandedFilesTrigger(BaseEventTrigger):
    """Fires when new entries have landed in ``directory``: one event per look that found any,
    naming all of them (Airflow gives a run only the first of several events queued together).

    After the triggerer restarts, whatever still waits in the folder is announced again; ingest
    moves each file out once its outcome is written, so a second run finds nothing to do.
    """

    def __init__(self, directory: str, poll_seconds: float = 2.0, settle_looks: int = 1):
        super().__init__()
        self.directory = directory
        self.poll_seconds = float(poll_seconds)
        self.settle_looks = int(settle_looks)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "directory": self.directory,
                "poll_seconds": self.poll_seconds,
                "settle_looks": self.settle_looks,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        arrivals = Arrivals(self.settle_looks)
        self.log.info("watching %s every %ss", self.directory, self.poll_seconds)
        while True:
            seen = await asyncio.to_thread(look, self.directory)
            ready = arrivals.update(seen)
            if ready:
                self.log.info("landed in %s: %s", self.directory, ready)
                yield TriggerEvent({"directory": self.directory, "names": ready})
            await asyncio.sleep(self.poll_seconds)
