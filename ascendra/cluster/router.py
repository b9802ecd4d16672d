"""The router: dispatch arrivals, and (for Ascendra) offload requests an LP instance would starve
(and, with a KV link, migrate running ones: cluster/migration.py).

Pure and time-agnostic like the schedulers: every call takes `now`. It reads each instance through
an `InstanceView` (a local scheduler in the simulator, a mirror of a remote one in the live server)
and moves requests only through it, so both runtimes run exactly these decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ascendra.cluster.arrival_window import ArrivalWindow
from ascendra.cluster.first_tokens import attention_left, project
from ascendra.cluster.migration import Migration, plan_migrations
from ascendra.cluster.roles import DEMOTE, PROMOTE, STAY, AdaptiveRoles, PoolSample
from ascendra.core.config import SchedulerConfig
from ascendra.core.kv_transfer import KVTransfer
from ascendra.core.projection import QueueView, misses_deadline
from ascendra.core.request import Request


class Role:
    LP = "lp"
    HP = "hp"
    ANY = "any"  # a baseline instance: every instance of a vllm or sarathi system


class InstanceView(Protocol):
    """What the router needs of an instance; the scheduler's own methods in the simulator."""

    pending_prefill_tokens: int
    num_waiting: int

    def snapshot(self) -> QueueView: ...  # carries the instance's Projection
    def take_waiting(self, request: Request) -> bool: ...
    def add_request(self, request: Request) -> None: ...
    def change_policy(self, policy: type, config: SchedulerConfig) -> None: ...  # a role change
    @property
    def kv_room(self) -> int: ...  # tokens of KV a request moved here could bring (migration)


@dataclass
class RouterConfig:
    offload: bool = False
    # A request is offloaded when its projected first token, stretched by the shorter prompts that
    # will arrive and be served ahead of it (`ArrivalWindow`), comes later than its deadline minus
    # this share of its TTFT SLO: slack for the projection's own error.
    offload_margin: float = 0.2
    # HP instances also take new arrivals, but while an LP instance has requests at risk their
    # projected wait counts this many times more, which keeps them light enough to absorb offloads.
    # With nothing at risk there is nothing to keep them for, and they share arrivals evenly.
    # math.inf keeps them for offloads alone while any request is at risk.
    hp_dispatch_weight: float = 2.0
    # At most this many offloads per instance per check: bounds the router's work per iteration.
    max_offloads_per_check: int = 32
    # Learnt slowdowns within this share of the fastest instance's count as equal at dispatch.
    # Live, each instance's slowdown wanders by a few percent with its iterations' scatter; were
    # it compared as it is, that noise rather than the load would pick the instance, and requests
    # would pile onto whichever last ran a little fast. A real noisy neighbour still counts.
    slowdown_tolerance: float = 0.1
    # Roles follow the load (cluster/roles.py): HP instances become LP while the LP pool is late
    # beyond their help, and the other way under bursts. Needs `role_specs` on the Router.
    adaptive_roles: bool = False
    # Running requests move with their KV over this link when the move pays (cluster/migration.py);
    # None: only requests that have not started move.
    migration: KVTransfer | None = None


class Router:
    def __init__(
        self,
        instances: list[InstanceView],
        roles: list[str],
        config: RouterConfig | None = None,
        role_specs: dict[str, tuple[type, SchedulerConfig]] | None = None,
    ) -> None:
        """`role_specs`: the policy and config of each role, for role changes (adaptive roles)."""
        if len(instances) != len(roles) or not instances:
            raise ValueError("the router needs one role per instance and at least one instance")
        self.instances = instances
        self.roles = list(roles)
        self.config = config or RouterConfig()
        self.alive = [True] * len(instances)
        self.role_specs = role_specs or {}
        self.adaptive: AdaptiveRoles | None = None
        if self.config.adaptive_roles and self.config.offload:
            if set(self.role_specs) < {Role.LP, Role.HP}:
                raise ValueError("adaptive roles need the policy and config of both roles")
            self.adaptive = AdaptiveRoles(roles.count(Role.HP))
        self.role_changes: list[tuple[int, str]] = []  # made since the runtime last read them
        self._arrivals = [ArrivalWindow() for _ in roles]  # kept for the instances offloaded from
        self._at_risk = [False] * len(roles)  # per LP instance, at its last check
        self._refused = 0  # at-risk requests no HP instance admitted, since the last sample
        self._set_roles()
        self.num_offloads = 0
        self.migrations: list[Migration] = []  # decided since the runtime last took them
        self.num_migrations = 0

    def _set_roles(self) -> None:
        self.hp = [i for i, r in enumerate(self.roles) if r == Role.HP]
        # Which instances' queues are checked for offloads: LP ones, when there is an HP to go to
        # (or may be one: with adaptive roles the checks also measure the LP pool's pressure).
        can = self.config.offload and (bool(self.hp) or self.adaptive is not None)
        self._offloads_from = [can and r == Role.LP for r in self.roles]

    def set_alive(self, index: int, alive: bool) -> None:
        """A dead instance gets no new requests and no offloads (the live runtime calls this)."""
        self.alive[index] = alive

    # ---- dispatch --------------------------------------------------------------------------

    def dispatch(self, request: Request, now: float) -> int:
        """Send a new request to the instance where its first token is projected soonest (the
        queued prompt tokens ahead of it at that instance's prefill rate, slowdowns within
        `slowdown_tolerance` of each other taken as equal); between equals (idle instances, at
        low load) to the one running fewest requests, whose decodes it will share iterations
        with. Returns its index."""
        alive = [i for i, ok in enumerate(self.alive) if ok]
        if not alive:
            raise RuntimeError("no live instance to dispatch to")
        snaps = [self.instances[i].snapshot() for i in alive]
        fastest = min(s.projection.slowdown for s in snaps)
        hp_weight = self.config.hp_dispatch_weight if any(self._at_risk) else 1.0
        best, best_key = -1, (math.inf, math.inf)
        for i, snap in zip(alive, snaps, strict=True):
            t = snap.prefill_rate().time_for(self.instances[i].pending_prefill_tokens
                                             + request.num_remaining_prefill)
            slowdown = snap.projection.slowdown
            if slowdown <= fastest * (1.0 + self.config.slowdown_tolerance):
                t *= fastest / slowdown  # as fast as the fastest: the difference is noise
            if self.roles[i] == Role.HP:
                t *= hp_weight
            # Microsecond rounding: a projection is no finer than that, and float noise must not
            # decide between otherwise equal instances.
            key = (round(t, 6), snap.num_decodes + len(snap.prefilling))
            if key < best_key and (self.roles[i] != Role.HP or self._admits(snap, request, now) is not None):
                best, best_key = i, key
        self.instances[best].add_request(request)
        if self.adaptive is not None:
            self.adaptive.observe_slo(request.slo.ttft)
        if self._offloads_from[best]:
            key = snaps[alive.index(best)].projection.waiting_key(request)
            self._arrivals[best].add(key, request.num_remaining_prefill, now)
        return best

    # ---- offload ---------------------------------------------------------------------------

    def offload(self, index: int, now: float) -> list[tuple[Request, int]]:
        """Project the first-token time of every request waiting on LP instance `index`, in the
        order its policy serves them, and move those that would come too late to the HP instance
        that can still meet their deadline, before their prefill starts, if it gives their first
        token sooner than this queue does as it stands. The stretch for the shorter prompts to come
        decides who is at risk, not where they go: the HP instance gets arrivals too, and a prompt
        moved for no gain takes the room of one the HP pool could save. A few vectorised passes
        over the queue's columns; no copies of scheduler state. Returns the moves as (request, HP
        index). With adaptive roles, the check also feeds the role rule and may change a role."""
        if not self._offloads_from[index]:
            return []
        moves = self._offload(index, now)
        if self.config.migration is not None:
            planned = plan_migrations(self, index, now, self.config.migration)
            self.migrations += planned
            self.num_migrations += len(planned)
        if self.adaptive is not None:
            moves += self._to_idle(index)
            self._adapt(now)
        return moves

    def _offload(self, index: int, now: float) -> list[tuple[Request, int]]:
        cfg = self.config
        view = self.instances[index]
        self._at_risk[index] = False
        if not view.num_waiting:
            return []  # nothing waiting, nothing to project (most iterations at moderate load)
        snap = view.snapshot()
        keys, rem, deadline, ttft, alone = snap.columns
        threshold = deadline - cfg.offload_margin * ttft
        head = snap.prefill_rate()
        stretch = 1.0 / (1.0 - self._arrivals[index].shares_ahead(keys, head, now))
        # Cheap test first: even served after every prompt here, would each be in time? The whole
        # queue at the head's rate (its tightest budget) bounds each projection, up to the fluid
        # model's small kinks at the linear layers' knees: the factor covers those many times.
        everything = head.time_for(float(rem.sum()) + _partial_tokens(snap),
                                   float((rem * (rem + 1) / 2).sum()) + _partial_pairs(snap))
        if now + 1.5 * everything * stretch.max() <= threshold.min():
            return []
        first, _ = project(snap, now)
        # In serving order (the late ones last), so that a request that leaves moves up exactly
        # the ones served after it, by its own cost (`removed`). One that cannot make its
        # deadline even served alone from now is beyond any instance's help.
        order = np.concatenate([np.flatnonzero(~first.late), np.flatnonzero(first.late)])
        times, cost, stretch = first.times[order] - now, first.cost[order], stretch[order]
        helpable = ~misses_deadline(now, alone, deadline, snap.projection.slowdown)[order]
        threshold = threshold[order]
        at_risk: list[tuple[int, float]] = []  # (position, first token projected if it stays)
        start, removed = 0, 0.0
        while len(at_risk) < cfg.max_offloads_per_check and start < len(order):
            risk = (now + (times[start:] - removed) * stretch[start:] > threshold[start:]) & helpable[start:]
            j = int(risk.argmax())
            if not risk[j]:
                break
            at_risk.append((int(order[start + j]), now + times[start + j] - removed))
            removed += cost[start + j]
            start += j + 1
        moves: list[tuple[Request, int]] = []
        late_now: dict[int, int] = {}  # per HP instance: how many it already cannot serve in time
        self._at_risk[index] = bool(at_risk) or bool(first.late.any())  # savable or not
        # Positions first: take_waiting shifts them.
        for req, stay in [(snap.waiting[i], t) for i, t in at_risk]:
            target = self._hp_for(req, now, late_now, sooner_than=stay)
            if target is None:
                self._refused += 1
                continue
            if view.take_waiting(req):
                req.offloaded = True
                self.instances[target].add_request(req)
                late_now.pop(target, None)  # its queue changed
                self.num_offloads += 1
                moves.append((req, target))
        return moves

    # ---- adaptive roles ----------------------------------------------------------------------

    def _to_idle(self, index: int) -> list[tuple[Request, int]]:
        """No instance idles beside a backlog: an instance with no prompt work takes its share of
        the waiting requests of LP instance `index`, the last ones that instance would serve. Only
        requests that have not started move, as offloads do. Dispatch balances new arrivals, but a
        backlog built under a burst stays where it queued (measured in the simulator on the vLLM
        engine's profile: the HP instance idle from the burst's end while the LP one drained 68
        requests alone)."""
        view = self.instances[index]
        idle = [j for j, ok in enumerate(self.alive) if ok and j != index
                and not self.instances[j].num_waiting and not self.instances[j].pending_prefill_tokens]
        if not idle or view.num_waiting < 2:
            return []
        share = view.pending_prefill_tokens / (len(idle) + 1)
        waiting = list(view.snapshot().waiting)  # in serving order: take from the end
        moves: list[tuple[Request, int]] = []
        for j in idle:
            moved = 0
            while len(waiting) > 1 and moved < share and len(moves) < self.config.max_offloads_per_check:
                req = waiting.pop()
                if view.take_waiting(req):
                    self.instances[j].add_request(req)
                    moved += req.num_remaining_prefill
                    moves.append((req, j))
        return moves

    def _adapt(self, now: float) -> None:
        """Feed the role rule this check's pool measurements; apply its decision, if any."""
        assert self.adaptive is not None
        lp = [i for i, r in enumerate(self.roles) if r == Role.LP and self.alive[i]]
        hp = [i for i in self.hp if self.alive[i]]
        busy = [i for i in hp if self.instances[i].num_waiting]
        sample = PoolSample(sum(self._at_risk[i] for i in lp) / max(1, len(lp)),
                            len(busy) / max(1, len(hp)), self._refused)
        self._refused = 0
        decision = self.adaptive.sample(now, sample, len(hp), len(lp))
        if decision == DEMOTE:  # the HP instance with the least prompt work left
            self.change_role(min(hp, key=lambda i: self.instances[i].pending_prefill_tokens), Role.LP)
        elif decision == PROMOTE:  # the LP instance with the least: it has the most room
            self.change_role(min(lp, key=lambda i: self.instances[i].pending_prefill_tokens), Role.HP)
        else:
            assert decision == STAY

    def change_role(self, index: int, role: str) -> None:
        """Instance `index` goes on under `role`'s policy and config with everything it holds."""
        policy, config = self.role_specs[role]
        self.instances[index].change_policy(policy, config)
        self.roles[index] = role
        self._arrivals[index] = ArrivalWindow()
        self._at_risk[index] = False
        self._set_roles()
        self.role_changes.append((index, role))

    def take_migrations(self) -> list[Migration]:
        """The moves decided since the last call, for the runtime to carry out."""
        moves, self.migrations = self.migrations, []
        return moves

    def admits(self, j: int, req: Request, now: float) -> float | None:
        """`_admits` on instance j as it stands."""
        return self._admits(self.instances[j].snapshot(), req, now)

    def _hp_for(self, req: Request, now: float, late_now: dict[int, int], sooner_than: float) -> int | None:
        """The HP instance that admits `req` with the earliest projected first token, if that is
        earlier than `sooner_than`."""
        best, best_t = None, sooner_than
        for h in self.hp:
            if not self.alive[h]:
                continue
            t = self._admits(self.instances[h].snapshot(), req, now, late_now, h)
            if t is not None and t < best_t:
                best, best_t = h, t
        return best

    @staticmethod
    def _admits(snap: QueueView, req: Request, now: float, late_now: dict[int, int] | None = None,
                h: int = -1) -> float | None:
        """The projected first-token time of `req` inserted in an HP instance's queue where its
        policy serves it (EDF: by deadline), if it meets its deadline there and makes none of the
        requests already there late (under overload EDF would otherwise miss them all); else
        None. New arrivals pass the same test, so they never push an offloaded request past its
        deadline. `late_now` caches, per HP instance `h`, how many it cannot serve in time as
        its queue stands."""
        first, at = project(snap, now, joining=req)
        t = float(first.times[at])
        if first.late[at] or t > req.ttft_deadline:
            return None
        cache = late_now if late_now is not None else {}
        if h not in cache:
            cache[h] = int(project(snap, now)[0].late.sum())
        return t if int(first.late.sum()) <= cache[h] else None


def _partial_tokens(snap: QueueView) -> int:
    return sum(r.num_remaining_prefill for r in snap.prefilling)


def _partial_pairs(snap: QueueView) -> int:
    return sum(attention_left(r) for r in snap.prefilling)
