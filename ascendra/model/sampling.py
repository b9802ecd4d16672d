"""Sampling parameters and a batched sampler with a random generator per request."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 is greedy; top_k -1 (or 0) and top_p 1 disable those filters.

    `stop`, `stop_token_ids` and `ignore_eos` are checked by the engine after each token; the sampler
    only reads temperature, top_k, top_p, seed and logprobs.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not self.temperature >= 0:  # also rejects NaN
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(f"top_k must be -1 or 0 (disabled) or a positive integer, got {self.top_k!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", [self.stop])
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")

    def stop_ids(self, eos_token_ids: frozenset[int] = frozenset()) -> frozenset[int]:
        """The token ids that end a request: its own, plus the model's EOS unless ignore_eos."""
        ids = frozenset(self.stop_token_ids)
        return ids if self.ignore_eos else ids | eos_token_ids

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


GREEDY = SamplingParams(temperature=0.0)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # non-deterministic, drawn once per request
    else:
        gen.manual_seed(seed)
    return gen


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> tuple[list[int], list[float | None]]:
    """One token per row of `logits` [S, V] (float32); generators[i] is used for non-greedy rows.

    Every row is filtered and drawn on its own, so a request's tokens depend on its logits and its
    generator only, never on the other rows in the batch. The returned logprob (when asked for) is
    the log-softmax of the raw logits at the chosen token, before temperature and filtering.
    """
    tokens = logits.argmax(dim=-1).tolist()
    logprobs: list[float | None] = [None] * len(params)
    random_rows = [i for i, p in enumerate(params) if not p.greedy]
    if random_rows:
        rows = torch.tensor(random_rows, device=logits.device)
        probs = _filtered_probs(logits.index_select(0, rows), [params[i] for i in random_rows])
        for j, i in enumerate(random_rows):
            gen = generators[i]
            if gen is None:
                raise ValueError(f"row {i} samples randomly but has no generator")
            tokens[i] = int(torch.multinomial(probs[j], 1, generator=gen).item())
    want = [i for i, p in enumerate(params) if p.logprobs]
    if want:
        idx = torch.tensor(want, device=logits.device)
        chosen = torch.tensor([tokens[i] for i in want], device=logits.device)
        lp = torch.log_softmax(logits.index_select(0, idx), dim=-1).gather(1, chosen[:, None])[:, 0].tolist()
        for i, v in zip(want, lp, strict=True):
            logprobs[i] = v
    return tokens, logprobs


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, then top-k, then top-p, all as batched ops over the rows' sorted logits."""
    temps = torch.tensor([p.temperature for p in params], device=logits.device, dtype=logits.dtype)
    scaled = logits / temps[:, None]
    vocab = logits.shape[-1]
    top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=logits.device)
    top_p = torch.tensor([p.top_p for p in params], device=logits.device, dtype=logits.dtype)
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None, :]
    drop = rank >= top_k[:, None]
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    # Keep the smallest prefix whose mass reaches top_p: drop a token if the mass before it already does.
    mass_before = probs.cumsum(dim=-1) - probs
    drop = mass_before >= top_p[:, None]
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    filtered = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
    return filtered.softmax(dim=-1)
