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
    # Ascendra policies: SLOs tighter than these (seconds; a server's default SLOs) shrink an
    # iteration only as far as its prompt throughput stays at least `protected_share` of what these
    # would give the same decodes (core/budget.py). None: every SLO shapes the budget as it asks.
    protected_ttft: float | None = None
    protected_tbt: float | None = None
    protected_share: float = 0.9


@dataclass(frozen=True)
class Rejection:
    """Why a request can never be served here, in words a client can act on."""

    code: str  # OpenAI-style error code
    message: str


@dataclass(frozen=True)
class KVCapacity:
    """What one instance can hold: its pool of KV blocks and its model's context length."""

    num_kv_blocks: int = 4096
    block_size: int = 16
    max_model_len: int = 4096
    # KV bytes of one token over all layers (what migrating a request moves); 0: not known.
    kv_bytes_per_token: int = 0

    @property
    def max_request_tokens(self) -> int:
        """Prompt plus output tokens one request may take."""
        return min(self.max_model_len, self.num_kv_blocks * self.block_size)

    def admission_error(self, prompt_len: int, max_tokens: int) -> Rejection | None:
        """The rule every door applies (the server, the offline LLM, the simulator): a request no
        instance could ever hold is refused up front, as vLLM refuses it, rather than left to
        wait forever for blocks that cannot come."""
        total = prompt_len + max_tokens
        if total > self.max_model_len:
            return Rejection(
                "context_length_exceeded",
                f"this model's maximum context length is {self.max_model_len} tokens; the request "
                f"asks for {prompt_len} prompt + {max_tokens} completion tokens",
            )
        if -(-total // self.block_size) > self.num_kv_blocks:
            return Rejection(
                "kv_cache_exceeded",
                f"the request needs {total} tokens of KV cache; an instance holds "
                f"{self.num_kv_blocks * self.block_size}",
            )
        return None
