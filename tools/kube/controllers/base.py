"""Common loop of the reconciling controllers: informers wake a level-triggered sync."""

from __future__ import annotations

import logging
import random
import threading
import time

from .client import Informer, KubeClient, Obj

log = logging.getLogger(__name__)


def random_suffix(n: int = 5) -> str:
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=n))


class Expectations:
    """Creations/deletions issued but not yet seen through the watch (per owner)."""

    def __init__(self, ttl: float = 15.0) -> None:
        self.ttl = ttl
        self.pending: dict[str, tuple[set[str], set[str], float]] = {}

    def expect(self, owner: str, created: set[str] | None = None,
               deleted: set[str] | None = None) -> None:
        add, rem, _ = self.pending.get(owner, (set(), set(), 0.0))
        self.pending[owner] = (add | (created or set()), rem | (deleted or set()),
                               time.monotonic())

    def satisfied(self, owner: str, present: set[str]) -> bool:
        entry = self.pending.get(owner)
        if not entry:
            return True
        add, rem, since = entry
        add = {n for n in add if n not in present}
        rem = {n for n in rem if n in present}
        if (not add and not rem) or time.monotonic() - since > self.ttl:
            self.pending.pop(owner, None)
            return True
        self.pending[owner] = (add, rem, since)
        return False


class Controller:
    """Owns informers; calls ``sync()`` on any change and at least every ``interval``."""

    name = "controller"
    resources: tuple[str, ...] = ()
    interval = 1.0

    def __init__(self, client: KubeClient, state_dir: str, stop: threading.Event) -> None:
        self.client = client
        self.state_dir = state_dir
        self.stop = stop
        self.wake = threading.Event()
        self.informers = {r: Informer(client, r, stop, on_change=self._changed, resync=30)
                          for r in self.resources}

    def _changed(self, kind: str, obj: Obj) -> None:
        self.wake.set()

    def items(self, resource: str) -> list[Obj]:
        return self.informers[resource].items()

    def sync(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release what the controller started (processes, files)."""

    def run(self) -> None:
        threads = [threading.Thread(target=inf.run, name=f"{self.name}-{r}-informer", daemon=True)
                   for r, inf in self.informers.items()]
        for t in threads:
            t.start()
        for inf in self.informers.values():
            inf.synced.wait(30)
        while not self.stop.is_set():
            self.wake.clear()
            try:
                self.sync()
            except Exception:
                log.exception("%s sync failed", self.name)
            self.wake.wait(self.interval)
        # informer threads are daemons blocked in watch reads: not joined
        self.shutdown()
