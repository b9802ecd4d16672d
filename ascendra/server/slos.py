"""The SLOs a request may ask for: the server's floors, the operator's minimums, and named classes.

  - Floors (core/slo_floors.py): below the time of its prompt alone on an idle instance (TTFT) or
    the smallest decode step (TBT), an SLO can never be met. The operator's minimums
    (`--min-ttft-slo-ms`, `--min-tbt-slo-ms`) raise them. A request asking for less gets a 400
    naming the field and the bound; with `--below-floor best-effort` it is served instead as if it
    had asked for the bound, and counted (`ascendra_requests_best_effort_total`).
  - Classes (`--slo-class gold=800:100`, repeated): with any defined, a request picks one by name
    (`slo_class`) instead of sending SLOs of its own, which are then refused: a multi-tenant operator
    offers a menu, not a dial. "default" always names the server's defaults.
  - A request that asks for nothing gets the server's defaults (the operator's choice, unchecked).
  - `tbt_slo_ms` bounds every gap between tokens; `tpot_slo_ms` (vLLM bench's TPOT) bounds their
    mean instead, for a client that reads the whole answer: its budget may spend what earlier gaps
    left unspent (`Request.gap_allowance`). One or the other; `--tbt-slo-mean` makes the server's
    default TBT SLO a mean one.

The floors and bounds are reported in /v1/models (`card`). Whatever is accepted still shapes its
instance's budget only within the protected share (core/budget.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ascendra.core.slo_floors import SLOFloors
from ascendra.server.validation import ApiError, brief

BELOW_FLOOR = ("reject", "best-effort")
DEFAULT_CLASS = "default"
CARD_PROMPT_LENGTHS = (1, 128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072)


@dataclass(frozen=True)
class SLOClass:
    name: str
    ttft_ms: float
    tbt_ms: float
    tbt_mean: bool = False

    @classmethod
    def parse(cls, text: str) -> SLOClass:
        """`name=ttft_ms:tbt_ms`, as `--slo-class` takes it."""
        name, eq, values = text.partition("=")
        ttft, colon, tbt = values.partition(":")
        try:
            if not (eq and colon and name.strip()):
                raise ValueError
            return cls(name.strip(), float(ttft), float(tbt))
        except ValueError:
            raise ValueError(f"--slo-class wants name=ttft_ms:tbt_ms (e.g. gold=800:100), got "
                             f"{text!r}") from None


@dataclass(frozen=True)
class AskedSLO:
    """What a request's body says about its SLOs (ms), before the floors are checked."""

    ttft_ms: float | None = None
    tbt_ms: float | None = None
    slo_class: str | None = None
    tpot_ms: float | None = None  # a TBT SLO on the mean gap


@dataclass(frozen=True)
class GrantedSLO:
    ttft: float  # seconds
    tbt: float
    best_effort: tuple[str, ...] = ()  # "ttft", "tbt": raised to the bound rather than refused
    tbt_mean: bool = False


@dataclass
class SLOPolicy:
    default: SLOClass
    floors: SLOFloors
    max_model_len: int
    min_ttft_ms: float = 0.0
    min_tbt_ms: float = 0.0
    classes: dict[str, SLOClass] = field(default_factory=dict)
    below_floor: str = "reject"

    def __post_init__(self) -> None:
        """Refuse a configuration that would promise what the server cannot keep, at start-up."""
        if self.below_floor not in BELOW_FLOOR:
            raise ValueError(f"--below-floor must be one of {', '.join(BELOW_FLOOR)}, got "
                             f"{self.below_floor!r}")
        if DEFAULT_CLASS in self.classes:
            raise ValueError(f"--slo-class {DEFAULT_CLASS!r} is taken: it names the server's defaults")
        for c in self.classes.values():
            lowest = self.tightest_ttft_ms(1)
            if c.ttft_ms < lowest or c.tbt_ms < self.tightest_tbt_ms:
                raise ValueError(f"--slo-class {c.name}={c.ttft_ms:g}:{c.tbt_ms:g} asks for less than this "
                                 f"server can honour: TTFT from {lowest:.1f} ms (a one-token prompt), TBT "
                                 f"from {self.tightest_tbt_ms:.1f} ms")

    @property
    def tightest_tbt_ms(self) -> float:
        return max(1e3 * self.floors.tbt, self.min_tbt_ms)

    def tightest_ttft_ms(self, prompt_len: int) -> float:
        return max(1e3 * self.floors.ttft(prompt_len), self.min_ttft_ms)

    def grant(self, asked: AskedSLO, prompt_len: int) -> GrantedSLO:
        """The SLOs a request is served with, or a 400 naming the field and the bound."""
        own = [name for name, v in (("ttft_slo_ms", asked.ttft_ms), ("tbt_slo_ms", asked.tbt_ms),
                                    ("tpot_slo_ms", asked.tpot_ms)) if v is not None]
        if asked.slo_class is not None:
            if own:
                raise ApiError(400, f"send either 'slo_class' or '{own[0]}', not both", "slo_class")
            c = self._class(asked.slo_class)
            if c.name == DEFAULT_CLASS:
                return GrantedSLO(c.ttft_ms / 1e3, c.tbt_ms / 1e3, (), c.tbt_mean)
            ttft, be = self._bounded("slo_class", c.ttft_ms, self.tightest_ttft_ms(prompt_len), prompt_len)
            return GrantedSLO(ttft / 1e3, c.tbt_ms / 1e3, ("ttft",) if be else (), c.tbt_mean)
        if self.classes and own:
            raise ApiError(400, f"this server serves named SLO classes: pick one with 'slo_class' "
                                f"({', '.join(self._names())}) instead of '{own[0]}'", own[0])
        if asked.tbt_ms is not None and asked.tpot_ms is not None:
            raise ApiError(400, "send either 'tbt_slo_ms' (each gap between tokens) or 'tpot_slo_ms' (their "
                                "mean), not both", "tpot_slo_ms")
        ttft, tbt, best_effort = self.default.ttft_ms, self.default.tbt_ms, []
        mean = self.default.tbt_mean
        if asked.ttft_ms is not None:
            bound = self.tightest_ttft_ms(prompt_len)
            ttft, be = self._bounded("ttft_slo_ms", asked.ttft_ms, bound, prompt_len)
            best_effort += ["ttft"] if be else []
        for param, asked_tbt in (("tbt_slo_ms", asked.tbt_ms), ("tpot_slo_ms", asked.tpot_ms)):
            if asked_tbt is not None:
                tbt, be = self._bounded(param, asked_tbt, self.tightest_tbt_ms)
                best_effort += ["tbt"] if be else []
                mean = param == "tpot_slo_ms"
        return GrantedSLO(ttft / 1e3, tbt / 1e3, tuple(best_effort), mean)

    def _bounded(self, param: str, asked: float, bound: float, prompt_len: int | None = None
                 ) -> tuple[float, bool]:
        """`asked` if it is at or above `bound`; else the bound (best-effort) or a 400."""
        if asked >= bound:
            return asked, False
        if self.below_floor == "best-effort":
            return bound, True
        tbt = prompt_len is None  # a TBT SLO, per gap or mean: the same floor
        minimum = self.min_tbt_ms if tbt else self.min_ttft_ms
        if minimum >= bound:
            why = f"this server's minimum (--min-{'tbt' if tbt else 'ttft'}-slo-ms)"
        elif tbt:
            why = "this server's floor: its smallest decode step, from its performance model"
        else:
            why = (f"this server's floor for a prompt of {prompt_len} tokens: the prompt alone on an idle "
                   f"instance, from its performance model")
        what = f"'{param}'" if param != "slo_class" else "the TTFT of the SLO class"
        raise ApiError(400, f"{what} must be at least {bound:.1f} ms, {why}; got {brief(asked)}", param,
                       "slo_below_floor")

    def _class(self, name: str) -> SLOClass:
        if name == DEFAULT_CLASS:
            return self.default
        if name not in self.classes:
            raise ApiError(400, f"unknown SLO class {brief(name, 60)}; this server has: "
                                f"{', '.join(self._names())}", "slo_class")
        return self.classes[name]

    def _names(self) -> list[str]:
        return [DEFAULT_CLASS, *self.classes]

    def card(self) -> dict:
        """What /v1/models tells clients: the defaults, the tightest SLOs they may ask (TTFT by
        prompt length), the operator's minimums and classes, and what happens below the floor."""
        lengths = [n for n in CARD_PROMPT_LENGTHS if n < self.max_model_len] + [self.max_model_len]
        return {
            "default": {"ttft_ms": self.default.ttft_ms, "tbt_ms": self.default.tbt_ms,
                        "tbt_mean": self.default.tbt_mean},
            "tightest": {"tbt_ms": _up(self.tightest_tbt_ms), "ttft_ms_by_prompt_tokens": {
                str(n): _up(self.tightest_ttft_ms(n)) for n in lengths}},
            "minimums": {"ttft_ms": self.min_ttft_ms, "tbt_ms": self.min_tbt_ms},
            "classes": {c.name: {"ttft_ms": c.ttft_ms, "tbt_ms": c.tbt_ms} for c in self.classes.values()},
            "below_floor": self.below_floor,
        }


def _up(ms: float) -> float:
    """Rounded up to a microsecond: a client that asks for exactly what the card says is accepted."""
    return math.ceil(ms * 1e3) / 1e3
