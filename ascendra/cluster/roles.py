"""Roles that follow the load: when an HP instance becomes LP, and back (issue 18).

A static split wastes its HP instances when nothing can be saved by moving it, and starves them
when much can. The router already measures both at every offload check: whether an LP instance
holds requests projected to miss their TTFT deadline ("pressure"), whether the HP instances have
requests waiting to start ("busy": a queue, not just a prompt in progress), and how many at-risk
requests no HP instance could take ("refused"). This rule integrates those over a window of a few
TTFT SLOs and moves one instance at a time:

- **HP -> LP** when the LP pool was under pressure for most of the window while the HP pool sat
  mostly idle: what is late there cannot be saved by an HP instance (too long, or too many), so the
  HP instance's cores are worth more serving throughput-first (a saturating load, a raw run).
- **LP -> HP** when at-risk requests were refused while the HP pool was busy nearly all the window:
  savable work is lost for want of HP room (a burst).
- **back toward the configured split** when the window was calm (little pressure, nothing refused),
  so the next burst finds the HP pool it was sized for. This is also the only way back from no HP
  instance at all: with none, every at-risk request is refused, and promoting on that alone would
  undo each demotion a window later under the very overload that caused it.

Hysteresis: the busy and pressure thresholds leave a wide band where nothing changes, a decision
needs a whole window of evidence, and a change starts a new window. The rule is pure: it reads
only what the router passes in, `now` included, so the simulator and the live server change roles
at the same points.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a decision reads, and where it changes a role.
DEMOTE, STAY, PROMOTE = -1, 0, 1


@dataclass
class RoleRuleConfig:
    window_slos: float = 4.0  # a window lasts this many mean TTFT SLOs of the requests seen
    pressure_high: float = 0.5  # LP pool under pressure this share of the window: overloaded
    pressure_low: float = 0.1  # ... at most this share: calm
    busy_low: float = 0.25  # HP pool with requests waiting at most this share of the window: idle
    busy_high: float = 0.75  # ... at least this share: saturated
    min_refused: int = 2  # at-risk requests no HP instance admitted, in one window
    slo_gain: float = 0.05  # weight of each new request in the mean TTFT SLO


@dataclass
class PoolSample:
    """What the router measured at one offload check."""

    lp_pressure: float  # share of live LP instances holding requests projected to miss TTFT
    hp_busy: float  # share of live HP instances with requests waiting to start
    refused: int  # at-risk requests that no HP instance admitted, since the previous sample


class AdaptiveRoles:
    def __init__(self, target_hp: int, config: RoleRuleConfig | None = None) -> None:
        self.target_hp = target_hp  # the configured split: where a calm window leads back to
        self.config = config or RoleRuleConfig()
        self.mean_ttft_slo: float | None = None
        self.num_changes = 0
        self._reset(None)

    def _reset(self, now: float | None) -> None:
        self._start = self._last = now
        self._pressure = self._busy = 0.0
        self._refused = 0

    def observe_slo(self, ttft_slo: float) -> None:
        """A request arrived with this TTFT SLO: it sets the window's length."""
        if ttft_slo <= 0 or ttft_slo == float("inf"):
            return
        m = self.mean_ttft_slo
        self.mean_ttft_slo = ttft_slo if m is None else m + self.config.slo_gain * (ttft_slo - m)

    def sample(self, now: float, s: PoolSample, num_hp: int, num_lp: int) -> int:
        """Fold in one check's measurements (each held since the previous sample); at a window's
        end, decide: DEMOTE (one HP instance to LP), PROMOTE (one LP to HP) or STAY."""
        if self._last is None:
            self._reset(now)
        dt = max(0.0, now - self._last)
        self._pressure += dt * s.lp_pressure
        self._busy += dt * s.hp_busy
        self._refused += s.refused
        self._last = now
        if self.mean_ttft_slo is None or now - self._start < self.config.window_slos * self.mean_ttft_slo:
            return STAY
        span = now - self._start
        decision = self.decide(self._pressure / span, self._busy / span, self._refused, num_hp, num_lp)
        self._reset(now)  # a new window either way; after a change, it measures the new split
        if decision != STAY:
            self.num_changes += 1
        return decision

    def decide(self, pressure: float, busy: float, refused: int, num_hp: int, num_lp: int) -> int:
        """The rule on one window's shares and count."""
        c = self.config
        if num_hp > 0 and pressure >= c.pressure_high and busy <= c.busy_low:
            return DEMOTE
        if num_hp > 0 and num_lp > 1 and refused >= c.min_refused and busy >= c.busy_high:
            return PROMOTE
        if pressure <= c.pressure_low and refused == 0 and num_hp != self.target_hp:
            if num_hp < self.target_hp and num_lp > 1:
                return PROMOTE
            if num_hp > self.target_hp:
                return DEMOTE
        return STAY
