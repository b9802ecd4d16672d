"""What a scheduler is configured with: plain data, the same for a live instance and a simulated one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SchedulerConfig:
    # The most tokens one iteration may carry (vLLM's max_num_batched_tokens, Sarathi's budget).
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    # Ascendra policies: the iteration-time target as a share of the tightest running TBT SLO.
    tbt_target: float = 0.9
    # Ascendra policies: the iteration-time cap as a share of the tightest TTFT SLO among the
    # requests still waiting for their first token.
    ttft_target: float = 0.45
    # Ascendra policies: the most prompt tokens one iteration may carry when nothing is decoding.
    max_idle_budget: int = 8192
    # Ascendra policies: an iteration that carries nothing else takes at least this many prompt
    # tokens, whatever the time limit says. An SLO too tight for any iteration to meet must not
    # stop the instance (the request that asked for it is served, and counted as a miss).
    min_prefill_chunk: int = 16
