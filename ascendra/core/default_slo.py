"""The default SLOs of a live request that sets none, defined once.

`ascendra serve` schedules a request that sends no `ttft_slo_ms` / `tbt_slo_ms` by them,
`ascendra bench` judges its runs by them (and sends them with `--send-slo`), the simulator's
`--slo serve` rule gives them to every request, and the README quotes them. Commands read
`DEFAULT_SLO` from this module when they build their options, so changing it here changes them all.

The values are serve's own, which its live tests were written against. With the default model on
a CPU an isolated decode iteration takes about 50 ms alone and 150-250 ms on a loaded 2-core
machine (docs/benchmarks.md §7). Measured on the 2-core VM at load average 2-3, 50 concurrent
300-token requests: with these SLOs the first 15 finished 61 s in; with 3000 / 500 ms, none had
within 61 s in one run and 15 at 86 s in another, and the hostile-input tests' windows were
missed. The capacity experiments (`simulate`, `capacity`) run on GPU profiles, where these would be
15-40x looser than the strict rule (TBT 60 ms, TTFT from 120 ms on the A100 profile); their rules
scale with the profile instead (runtime/slo_rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ascendra.core.request import SLO


@dataclass(frozen=True)
class DefaultSLO:
    ttft_ms: float
    tbt_ms: float

    def slo(self) -> SLO:
        """In seconds, as a request carries it."""
        return SLO(self.ttft_ms / 1e3, self.tbt_ms / 1e3)

    def describe(self) -> str:
        return f"TTFT {self.ttft_ms:g} ms, TBT {self.tbt_ms:g} ms"


DEFAULT_SLO = DefaultSLO(ttft_ms=5000.0, tbt_ms=1000.0)
