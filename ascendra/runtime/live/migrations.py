"""Migrations on the live cluster, server side: a running request moved with its KV (issue 18).

The router decides (cluster/migration.py), or an operator asks (`start`). The server tells the
source worker to hand the request over (`Migrate`); the worker copies the request's KV out of its
cache as bytes, frees its blocks and puts the request, where it stands, in its next report; the
server sends that on to the target (`AddMigrated`), which copies the KV into blocks of its own and
goes on. Every frame is signed msgpack (wire.py): the KV crosses as bytes with its dtype and shape,
checked by the target before it is used, never unpickled. The client's stream goes on unbroken:
the source's outputs come before its hand-over in the same report, the target's after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ascendra.runtime.live import messages as m

if TYPE_CHECKING:
    from ascendra.runtime.live.cluster import LiveCluster


class LiveMigrations:
    def __init__(self, cluster: LiveCluster) -> None:
        self.cluster = cluster
        self.in_flight: dict[str, int] = {}  # request id -> target, while its source hands it over
        self.num_migrations = 0

    def start(self, request_id: str, target: int) -> bool:
        """Move a running request to instance `target`. False if it is not running on another live
        instance of our engine, or already moving."""
        c = self.cluster
        tr = c.tracked.get(request_id)
        if tr is None or c.vllm is not None or request_id in self.in_flight or tr.instance in (-1, target):
            return False
        if not 0 <= target < len(c.workers) or not c.workers[target].alive:
            return False
        self.in_flight[request_id] = target
        c.views[tr.instance].stealing.add(request_id)  # leaving: the router plans no other move for it
        c._send(tr.instance, m.Migrate(c._next_seq(), request_id))
        return True

    def settle(self, rep: m.Report) -> None:
        """Requests the worker handed over go on to their target with their KV; with the target
        gone, to another live instance; with none, they fail with the reason."""
        c = self.cluster
        view = c.views[rep.index]
        for moved in rep.migrated:
            rid = moved.request_id
            view.stealing.discard(rid)
            target = self.in_flight.pop(rid, None)
            tr = c.tracked.get(rid)
            if tr is None:
                continue  # ended while it moved (the client left): no instance holds it any more
            if target is None or not c.workers[target].alive:
                live = [j for j, w in enumerate(c.workers) if w.alive]
                if not live:
                    c._fail(tr, "no live instance could take the request over")
                    continue
                target = live[0]
            tr.instance = target
            self.num_migrations += 1
            c.observer.on_migration()
            c._send(target, m.AddMigrated(c._next_seq(), tr.add, moved))
        for rid in rep.not_migrated:
            view.stealing.discard(rid)
            self.in_flight.pop(rid, None)

    def forget(self, request_id: str) -> None:
        """The request ended, or its source died: no hand-over is awaited any more."""
        self.in_flight.pop(request_id, None)
