"""SLO rules: how a workload's requests get their (TTFT, TBT) objectives, one rule object per kind.

Every rule scales with the hardware through the performance model, as Sarathi-Serve sets SLOs:
its unit is one isolated decode iteration (one request decoding alone at a 1k context).

- `ScaledSLO`: TBT a multiple of the decode iteration; TTFT a multiple of the request's own prompt
  prefilled alone, with a floor (a multiple of the decode iteration), so a long prompt is not asked
  for the impossible and a short one not given minutes. A long prompt gets a long deadline, which
  makes starving it cheap.
- `ProductSLO`: one TTFT target for every request, as a product sets one per class of traffic
  (and the same TBT for all): a multiple of the decode iteration plus the prefill of a reference
  prompt.
- `SLOClasses`: a mix of rules in one run, each request drawn into a class by its share.
- `ServeSLO`: `ascendra serve`'s fixed defaults (core.default_slo) for every request, whatever the
  hardware: to simulate the live server on its own CPU profile, where they were set.

Requests carry their own SLO, so a rule only decides the numbers; the schedulers read them per
request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ascendra.core import default_slo
from ascendra.core.perf_model import PerfModel, isolated_decode_time, isolated_prefill_time
from ascendra.core.request import SLO


class SLORule(Protocol):
    name: str

    def slos(self, prompt_lens: Sequence[int], perf: PerfModel, rng: np.random.Generator) -> list[SLO]:
        """One SLO per request, in order; `rng` draws whatever the rule leaves to chance."""
        ...

    def describe(self, perf: PerfModel) -> str:
        """The rule and its values on this hardware, in words."""
        ...


@dataclass(frozen=True)
class ScaledSLO:
    name: str
    tbt_scale: float  # x the isolated decode iteration
    ttft_scale: float  # x the request's isolated prefill
    ttft_floor_scale: float  # the TTFT floor, x the isolated decode iteration

    def tbt(self, perf: PerfModel) -> float:
        return self.tbt_scale * isolated_decode_time(perf)

    def ttft(self, perf: PerfModel, prompt_len: int) -> float:
        return max(
            self.ttft_floor_scale * isolated_decode_time(perf),
            self.ttft_scale * isolated_prefill_time(perf, prompt_len),
        )

    def slos(self, prompt_lens: Sequence[int], perf: PerfModel, rng: np.random.Generator) -> list[SLO]:
        tbt = self.tbt(perf)
        ttft = {p: self.ttft(perf, p) for p in set(prompt_lens)}  # lengths repeat: predict each once
        return [SLO(ttft[p], tbt) for p in prompt_lens]

    def describe(self, perf: PerfModel) -> str:
        d = isolated_decode_time(perf)
        return (
            f"{self.name}: TBT {self.tbt_scale:g}x decode = {1e3 * self.tbt(perf):.0f} ms; TTFT "
            f"max({self.ttft_floor_scale:g}x decode = {1e3 * self.ttft_floor_scale * d:.0f} ms, "
            f"{self.ttft_scale:g}x the prompt's own prefill)"
        )


@dataclass(frozen=True)
class ProductSLO:
    name: str
    ttft_decode_scale: float  # TTFT = this x the isolated decode iteration ...
    ref_prompt_len: int  # ... + the isolated prefill of a prompt this long
    tbt_scale: float  # x the isolated decode iteration

    def slo(self, perf: PerfModel) -> SLO:
        d = isolated_decode_time(perf)
        return SLO(self.ttft_decode_scale * d + isolated_prefill_time(perf, self.ref_prompt_len),
                   self.tbt_scale * d)

    def slos(self, prompt_lens: Sequence[int], perf: PerfModel, rng: np.random.Generator) -> list[SLO]:
        return [self.slo(perf)] * len(prompt_lens)

    def describe(self, perf: PerfModel) -> str:
        s = self.slo(perf)
        return (
            f"{self.name}: every request TTFT {1e3 * s.ttft:.0f} ms ({self.ttft_decode_scale:g}x decode "
            f"+ the prefill of a {self.ref_prompt_len:,}-token prompt), TBT {self.tbt_scale:g}x decode "
            f"= {1e3 * s.tbt:.0f} ms"
        )


@dataclass(frozen=True)
class SLOClass:
    share: float  # of the requests, drawn independently per request
    rule: SLORule


@dataclass(frozen=True)
class SLOClasses:
    name: str
    classes: tuple[SLOClass, ...]

    def __post_init__(self) -> None:
        if not self.classes or any(c.share <= 0 for c in self.classes):
            raise ValueError("SLO classes need at least one class, each with a positive share")
        if abs(sum(c.share for c in self.classes) - 1.0) > 1e-9:
            raise ValueError("SLO class shares must sum to 1")

    def assign(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Each request's class index."""
        return rng.choice(len(self.classes), size=n, p=[c.share for c in self.classes])

    def slos(self, prompt_lens: Sequence[int], perf: PerfModel, rng: np.random.Generator) -> list[SLO]:
        which = self.assign(len(prompt_lens), rng)
        per_class = [c.rule.slos(prompt_lens, perf, rng) for c in self.classes]
        return [per_class[k][i] for i, k in enumerate(which)]

    def describe(self, perf: PerfModel) -> str:
        parts = "; ".join(f"{c.share:.0%} {c.rule.describe(perf)}" for c in self.classes)
        return f"{self.name}: per request, {parts}"


@dataclass(frozen=True)
class ServeSLO:
    name: str

    def slos(self, prompt_lens: Sequence[int], perf: PerfModel, rng: np.random.Generator) -> list[SLO]:
        # Read when the run is built, not at import: the one definition stays the only one.
        return [default_slo.DEFAULT_SLO.slo()] * len(prompt_lens)

    def describe(self, perf: PerfModel) -> str:
        return f"{self.name}: every request {default_slo.DEFAULT_SLO.describe()} (ascendra serve's defaults)"


STRICT = ScaledSLO("strict", tbt_scale=5.0, ttft_scale=5.0, ttft_floor_scale=10.0)
RELAXED = ScaledSLO("relaxed", tbt_scale=25.0, ttft_scale=25.0, ttft_floor_scale=50.0)

# Strict: TBT 5x (Sarathi-Serve's strict SLO); TTFT 5x the prompt's isolated prefill, at least two
# TBT SLOs. Relaxed: 25x (Sarathi-Serve's relaxed), TTFT likewise scaled.
# Product: one TTFT for all, 10x decode + the prefill of a full-context (8,192-token) prompt, so every
# request the model admits could meet it served alone and none is given more; with the median conv
# prompt instead (1,020 tokens: 200 ms on the A100 Llama-3-8B profile) 9.7% of conv prompts could not
# meet it even alone, and no system would reach 90%. TBT 5x decode, as strict.
# Classes: 70% interactive (strict) and 30% relaxed in one run.
SLO_RULES: dict[str, ScaledSLO | ProductSLO | SLOClasses | ServeSLO] = {
    "strict": STRICT,
    "relaxed": RELAXED,
    "product": ProductSLO("product", ttft_decode_scale=10.0, ref_prompt_len=8192, tbt_scale=5.0),
    "classes": SLOClasses("classes", (SLOClass(0.7, STRICT), SLOClass(0.3, RELAXED))),
    "serve": ServeSLO("serve"),
}


def slo_rule(name_or_rule: str | SLORule) -> SLORule:
    if not isinstance(name_or_rule, str):
        return name_or_rule
    try:
        return SLO_RULES[name_or_rule]
    except KeyError:
        raise ValueError(
            f"unknown SLO setting {name_or_rule!r}; choose one of {', '.join(SLO_RULES)}"
        ) from None
