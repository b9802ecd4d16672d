"""One iteration's batch and the composition figures the performance model reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ascendra.core.request import Request


@dataclass(slots=True)
class BatchShape:
    """What an iteration costs depends on, accumulated while the batch is built.

    `prefill_attn_work` counts causal query-key pairs of the prompt chunks (q*c + q(q+1)/2 for a
    chunk of q tokens after c cached ones): attention FLOPs. `decode_context` sums the cached
    tokens every decode reads: attention bytes. Whether a sequence is a decode is the request's
    call (`Request.is_decode`), passed in.
    """

    num_tokens: int = 0
    num_seqs: int = 0
    num_prefill_tokens: int = 0
    num_decodes: int = 0
    prefill_attn_work: int = 0
    decode_context: int = 0

    def add(self, num_computed: int, num_new: int, decode: bool) -> None:
        self.num_tokens += num_new
        self.num_seqs += 1
        if decode:
            self.num_decodes += 1
            self.decode_context += num_computed + 1
        else:
            self.num_prefill_tokens += num_new
            self.prefill_attn_work += num_new * num_computed + num_new * (num_new + 1) // 2

    @classmethod
    def of(cls, prefills: Iterable[tuple[int, int]] = (), decodes: Iterable[int] = ()) -> BatchShape:
        """The shape of a made-up batch: prompt chunks as (num_computed, num_new), and decodes
        by the number of tokens each has cached."""
        shape = cls()
        for computed, new in prefills:
            shape.add(computed, new, decode=False)
        for computed in decodes:
            shape.add(computed, 1, decode=True)
        return shape


@dataclass(slots=True)
class ScheduledBatch:
    """What `Scheduler.schedule` returns: run `num_new_tokens[i]` tokens of `requests[i]`."""

    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    shape: BatchShape = field(default_factory=BatchShape)
    preempted: list[Request] = field(default_factory=list)
    start_time: float = 0.0  # the `now` it was scheduled at
    predicted: float = 0.0  # its duration as the scheduler's performance model predicts it (0: none)

    def add(self, request: Request, num_new: int) -> None:
        self.requests.append(request)
        self.num_new_tokens.append(num_new)
        self.shape.add(request.num_computed_tokens, num_new, request.is_decode)

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def is_empty(self) -> bool:
        return not self.requests

    def samples(self, i: int) -> bool:
        """Whether sequence i produces a token this iteration (its last pending token is computed)."""
        r = self.requests[i]
        return r.num_computed_tokens + self.num_new_tokens[i] >= r.num_tokens
