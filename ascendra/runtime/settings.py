"""The capacity settings S1-S5: workloads as users run them, each one `ascendra capacity --setting`.

All use the headline's hardware (the a100-llama-3-8b profile, 4 instances) unless the command line
overrides it, and any other scenario flag given beside `--setting` overrides the setting's value.

| setting | lengths | arrivals | SLOs |
|---|---|---|---|
| S1 | the Azure conv trace's own | the trace's own timestamps, sped up (a seed is a window) | strict |
| S2 | Azure code, fitted | Poisson | strict |
| S3 | Azure conv, fitted | gamma, CV 3 | strict |
| S4 | Azure conv, fitted | Poisson | product: one TTFT for all |
| S5 | Azure conv, fitted | Poisson | 70% strict, 30% relaxed, per request |

S1 needs the trace file, which the project does not ship (see TRACE_HELP).
"""

from __future__ import annotations

from dataclasses import dataclass

from ascendra.runtime.experiment import Scenario

TRACE_HELP = (
    "S1 replays the Azure LLM inference trace 2023 (conversation service; Patel et al., Splitwise, "
    "ISCA 2024, CC-BY): download AzureLLMInferenceTrace_conv.csv from "
    "https://github.com/Azure/AzurePublicDataset (data/AzureLLMInferenceTrace_conv.csv), or Vidur's "
    "copy data/processed_traces/splitwise_conv.csv from https://github.com/microsoft/vidur, and pass "
    "--trace PATH"
)


@dataclass(frozen=True)
class Setting:
    name: str
    title: str
    workload: str | None  # fitted lengths; None: the trace given with --trace
    arrival: str
    cv: float = 1.0
    slo: str = "strict"
    lo: float = 1.0  # the capacity search's first rate, req/s: below the capacity of the systems compared

    def scenario(self, *, trace: str | None = None, **overrides) -> Scenario:
        """The setting's scenario; keyword arguments (profile, num_requests, ...) override it."""
        workload = self.workload
        if trace and workload is not None:
            raise ValueError(f"{self.name} draws fitted {workload} lengths; a trace is replayed by S1")
        if workload is None:
            if not trace:
                raise ValueError(TRACE_HELP)
            workload = trace
        fields = {"workload": workload, "arrival": self.arrival, "cv": self.cv, "slo": self.slo}
        given = {k: v for k, v in overrides.items() if v is not None}
        if given.get("arrival", self.arrival) != self.arrival and "cv" not in given:
            fields["cv"] = 1.0  # the setting's CV belongs to its own arrival process
        fields.update(given)
        return Scenario(**fields)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("S1", "Azure conv trace, own timestamps sped up, strict SLOs", None, "replay"),
        Setting("S2", "Azure code lengths, Poisson, strict SLOs", "code", "poisson"),
        # Bursts of near-simultaneous arrivals: FCFS systems miss 99% at a few req/s, so start lower.
        Setting("S3", "Azure conv lengths, gamma arrivals CV 3, strict SLOs", "conv", "gamma", cv=3.0,
                lo=0.25),
        Setting("S4", "Azure conv lengths, Poisson, product SLOs", "conv", "poisson", slo="product"),
        Setting("S5", "Azure conv lengths, Poisson, 70% strict / 30% relaxed SLOs", "conv", "poisson",
                slo="classes"),
    )
}


def setting(name: str) -> Setting:
    try:
        return SETTINGS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown setting {name!r}; choose one of {', '.join(SETTINGS)}") from None
