"""How long one iteration of an Ascendra instance may take: one definition, read by the scheduler
(each iteration, `AscendraLPScheduler._chunk_limit`) and by the router's projection
(`AscendraLPScheduler.prefill_rate`).

As the SLOs ask, the limit is the tighter of
  - `tbt_target` x the tightest TBT SLO among the running decodes (the gap they see), and
  - `ttft_target` x the tightest TTFT SLO still waiting for a first token.
Unbounded, that hands every client a lever on everyone's budget: four clients asking for a 1 ms TBT
cut the prompt tokens of every iteration on their instance to nothing, and another client's
1,500-token prompt waited 3.7x as long for its first token (issue 21).

So SLOs tighter than the protected ones (a server's default SLOs: what every client may count on)
shrink an iteration only as far as the share of its time left to prompts, what the decodes and the
iteration's fixed cost do not take, stays at least `protected_share` of that share for the same
decodes with every SLO loosened to the protected ones. A prompt's first token waits for its prompt
work, which is the same however it is chunked, so that share bounds how much longer any prompt
waits, as far as the performance model splits an iteration's cost rightly into fixed and per-token
parts: `protected_share` 0.9 keeps it within 1/0.9 = 1.11x of the model's seconds. (Live, short
iterations cost more beyond the model than long ones, so the stretch measured is somewhat larger:
docs/benchmarks.md section 10.) A tight SLO is honoured in full where it costs little (on a CPU a
400 ms iteration leaves prompts nearly as much of its time as a 900 ms one), and no further; past
that point its request is served best-effort. The operator sets the share
(`--protected-prefill-share`): 0 lets every accepted SLO shape the budget as it asks, 1 lets none
cost the prompts anything.
"""

from __future__ import annotations

from ascendra.core.batch import BatchShape
from ascendra.core.config import SchedulerConfig
from ascendra.core.perf_model import PerfModel


def time_limit(config: SchedulerConfig, min_tbt: float | None, min_ttft_slo: float | None) -> float | None:
    """The longest an iteration may take (real seconds) as the SLOs ask it, given the tightest TBT
    SLO among its decodes and the tightest TTFT SLO still waiting for a first token; None: no
    limit."""
    limit = None if min_tbt is None else config.tbt_target * min_tbt
    if min_ttft_slo is not None and config.ttft_target > 0:
        ttft_limit = config.ttft_target * min_ttft_slo
        limit = ttft_limit if limit is None else min(limit, ttft_limit)
    return limit


def budget_limit(config: SchedulerConfig, perf: PerfModel, slowdown: float, base: BatchShape,
                 min_tbt: float | None, min_ttft_slo: float | None) -> float | None:
    """The longest an iteration over the decodes `base` may take (real seconds): `time_limit`,
    raised where it would leave prompts less than the protected share of what the protected SLOs
    leave them (module doc). `slowdown` converts between real and model seconds, as everywhere in
    the budgets."""
    limit = time_limit(config, min_tbt, min_ttft_slo)
    share = config.protected_share
    if limit is None or share <= 0:
        return limit
    loosened = time_limit(config, _looser(min_tbt, config.protected_tbt),
                          _looser(min_ttft_slo, config.protected_ttft))
    if loosened is None or loosened <= limit:
        return limit  # no SLO here is tighter than the protected ones
    # In model seconds: an iteration of the decodes and an empty chunk costs `fixed` whatever it
    # carries, and prompt work fills the rest. The protected SLOs' iteration (as long as their
    # limit, or shorter where the token cap ends it first) spends the share 1 - fixed/t_ref of its
    # time on prompts; a tighter limit may shrink that share only to `share` x as much, which an
    # iteration of fixed / (1 - share (1 - fixed/t_ref)) seconds keeps. Counted in time, not in
    # tokens: a prompt's attention costs the same however it is chunked, so what an iteration's
    # fixed cost takes from the prompts is what a victim's first token waits for.
    cap = config.max_num_batched_tokens - base.num_decodes
    n_ref = perf.max_prefill_tokens(base, loosened / slowdown, 0, cap)
    if n_ref <= 0:
        return limit  # the protected SLOs leave prompts no room either: nothing to protect
    fixed = _iteration_time(perf, base, 0)
    t_ref = _iteration_time(perf, base, n_ref)
    if t_ref <= 0:
        return limit
    shortest = fixed / (1.0 - min(share, 1.0) * (1.0 - fixed / t_ref)) * slowdown
    return max(limit, shortest)


def _iteration_time(perf: PerfModel, base: BatchShape, n: int) -> float:
    """Model seconds of the decodes `base` and one fresh prompt chunk of `n` tokens (as
    `PerfModel.max_prefill_tokens` counts it against a limit; n = 0: the chunk's sequence alone)."""
    work = base.prefill_attn_work + n * (n + 1) // 2
    return perf.predict_parts(base.num_tokens + n, base.num_seqs + 1, work, base.decode_context)


def _looser(asked: float | None, protected: float | None) -> float | None:
    if asked is None or protected is None:
        return asked
    return max(asked, protected)
