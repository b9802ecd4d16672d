"""Build a workload (a list of WorkItems) from a fitted distribution or a trace, and turn it into Requests.

Randomness: one `seed` feeds two independent streams (numpy SeedSequence.spawn), one for arrival
gaps and one for lengths. So the same seed gives the same lengths at every rate and with either
arrival process, and the same arrival pattern stretched in time at every rate: a capacity search
compares rates on common random numbers instead of on fresh noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ascendra.core.request import SLO, Request
from ascendra.workload.arrivals import make_arrivals
from ascendra.workload.item import WorkItem
from ascendra.workload.lengths import load_length_model
from ascendra.workload.traces import read_trace, scale_arrivals


def _is_trace_path(name: str) -> bool:
    return name.endswith(".csv") or Path(name).is_file()


def fit_to_model_len(item: WorkItem, max_model_len: int) -> WorkItem:
    """Make prompt_len + output_len <= max_model_len by truncating the prompt (keeping at least 1 token).

    The output is kept whole when it fits, because output length is what decode time and TBT depend on;
    only an output of max_model_len tokens or more is cut, to max_model_len - 1 with a 1-token prompt.
    """
    if max_model_len < 2:
        raise ValueError(f"max_model_len must be at least 2, got {max_model_len}")
    if item.prompt_len + item.output_len <= max_model_len:
        return item
    output = min(item.output_len, max_model_len - 1)
    return WorkItem(item.arrival_time, max(1, max_model_len - output), output)


def make_workload(
    name_or_trace: str,
    *,
    rate: float | None,
    num_requests: int | None,
    seed: int,
    arrival: str = "poisson",
    cv: float = 1.0,
    max_model_len: int | None = None,
) -> list[WorkItem]:
    """A list of WorkItems sorted by arrival time.

    name_or_trace: a fitted distribution (`conv`, `code`, `arxiv`, `cpu-small`, or `NAME/FACTOR` for
    lengths divided by FACTOR) or the path of a trace CSV (see `ascendra.workload.traces`).

    - Distribution: `num_requests` lengths and arrivals from `arrival` (`poisson`, or `gamma` with
      coefficient of variation `cv`) at `rate` requests/s; rate None puts every arrival at time 0
      (an offline batch).
    - Timestamped trace: its first `num_requests` rows (all when None, or when the trace is shorter:
      check len() of the result) with their own timing, rescaled
      to mean `rate` when given (`arrival`, `cv` and `seed` are then unused).
    - Lengths-only trace (Vidur's arXiv file): its first `num_requests` rows, arrivals drawn as for a
      distribution.

    max_model_len: when given, every item is cut to fit (see `fit_to_model_len`).
    """
    arrival_ss, length_ss = np.random.SeedSequence(seed).spawn(2)
    if _is_trace_path(name_or_trace):
        trace = read_trace(name_or_trace, limit=num_requests)
        prompts, outputs = trace.prompt_lens, trace.output_lens
        if trace.arrival_times is not None:
            times = scale_arrivals(trace.arrival_times, rate=rate)
        else:
            times = _arrivals(arrival, len(prompts), rate, cv, np.random.default_rng(arrival_ss))
    else:
        if num_requests is None or num_requests < 0:
            raise ValueError(f"a fitted workload needs num_requests >= 0, got {num_requests}")
        model = load_length_model(name_or_trace)
        # Validate the arrival settings before drawing lengths, so a typo fails fast.
        times = _arrivals(arrival, num_requests, rate, cv, np.random.default_rng(arrival_ss))
        prompts, outputs = model.sample(num_requests, np.random.default_rng(length_ss))
    items = [WorkItem(float(t), int(p), int(o)) for t, p, o in zip(times, prompts, outputs, strict=True)]
    if max_model_len is not None:
        items = [fit_to_model_len(it, max_model_len) for it in items]
    return items


def _arrivals(kind: str, n: int, rate: float | None, cv: float, rng: np.random.Generator) -> np.ndarray:
    if rate is None:
        return np.zeros(n)
    return make_arrivals(kind, n, rate, rng, cv=cv)


def to_requests(items: Sequence[WorkItem], slo_fn: Callable[[WorkItem], SLO]) -> list[Request]:
    """Requests for the simulator or a load client: request_id = str(index), max_tokens = output_len."""
    return [
        Request(request_id=str(i), arrival_time=it.arrival_time, prompt_len=it.prompt_len,
                max_tokens=it.output_len, slo=slo_fn(it))
        for i, it in enumerate(items)
    ]
