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
        """Temperatures below GREEDY_TEMPERATURE (or top_k 1) pick the argmax: dividing logits by
        1e-300 overflows to inf and a softmax of infs is NaN, so a "nearly greedy" request would
        otherwise fail, and its draw would be the argmax anyway."""
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1


# vLLM's threshold for treating a temperature as zero.
GREEDY_TEMPERATURE = 1e-5
GREEDY = SamplingParams(temperature=0.0)
# torch.Generator.manual_seed takes [-2**63, 2**64); a request's seed is reduced into [0, 2**64).
SEED_MODULUS = 2**64


@dataclass
class Sampled:
    """One entry per row: the token (None where the row failed), its logprob if asked for, and
    the reason a row failed (None where it did not). One row's failure leaves the others alone."""

    token_ids: list[int | None]
    logprobs: list[float | None]
    errors: list[str | None]


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # non-deterministic, drawn once per request
    else:
        gen.manual_seed(int(seed) % SEED_MODULUS)
    return gen


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> Sampled:
    """One token per row of `logits` [S, V] (float32); generators[i] is used for non-greedy rows.

    Every row is filtered and drawn on its own, so a request's tokens depend on its logits and its
    generator only, never on the other rows in the batch. The returned logprob (when asked for) is
    the log-softmax of the raw logits at the chosen token, before temperature and filtering.
    Everything stays on the device until one transfer at the end (the only host sync). A row whose
    logits or filtered probabilities are not finite gets an error instead of a token.
    """
    n = logits.shape[0]
    dev = logits.device
    tokens = logits.argmax(dim=-1)
    ok = torch.ones(n, dtype=torch.bool, device=dev)
    errors: list[str | None] = [None] * n
    random_rows = [i for i, p in enumerate(params) if not p.greedy]
    if random_rows:
        rows = torch.tensor(random_rows, device=dev)
        probs = _filtered_probs(logits.index_select(0, rows), [params[i] for i in random_rows])
        finite = torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)
        # multinomial rejects (CPU) or device-asserts on (CUDA) a bad row: it draws from a stand-in.
        probs = torch.where(finite[:, None], probs, _first_token_only(probs))
        drawn = tokens.index_select(0, rows)
        for j, i in enumerate(random_rows):
            gen = generators[i]
            if gen is None:
                errors[i] = "the row samples randomly but has no generator"
                continue
            try:
                drawn[j : j + 1] = torch.multinomial(probs[j], 1, generator=gen)
            except RuntimeError as e:
                errors[i] = f"sampling failed: {e}"
        tokens = tokens.index_copy(0, rows, drawn)
        ok = ok.index_copy(0, rows, finite)
    # A NaN anywhere wins argmax, and a +inf logit makes the softmax NaN: either way the row's
    # distribution is gone.
    ok &= torch.isfinite(logits.gather(1, tokens[:, None])[:, 0]) & ~torch.isnan(logits).any(dim=-1)
    want = [i for i, p in enumerate(params) if p.logprobs]
    lp = torch.zeros(n, dtype=torch.float64, device=dev)
    if want:
        idx = torch.tensor(want, device=dev)
        chosen = tokens.index_select(0, idx)[:, None]
        picked = torch.log_softmax(logits.index_select(0, idx), dim=-1).gather(1, chosen)[:, 0]
        lp = lp.index_copy(0, idx, picked.double())
    host = torch.stack([tokens.double(), lp, ok.double()]).tolist()
    token_ids: list[int | None] = [int(t) for t in host[0]]
    logprobs: list[float | None] = [None] * n
    for i in want:
        logprobs[i] = host[1][i]
    for i in range(n):
        if errors[i] is None and not host[2][i]:
            errors[i] = "the model's logits for this row are not finite (NaN or inf)"
        if errors[i] is not None:
            token_ids[i], logprobs[i] = None, None
    return Sampled(token_ids, logprobs, errors)


def _first_token_only(probs: torch.Tensor) -> torch.Tensor:
    stand_in = torch.zeros_like(probs)
    stand_in[:, 0] = 1.0
    return stand_in


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, then top-k, then top-p, all as batched ops over the rows' sorted logits."""
    vocab = logits.shape[-1]
    temps = torch.tensor([p.temperature for p in params], device=logits.device, dtype=logits.dtype)
    scaled = logits / temps[:, None]
    # top_k beyond the vocabulary (up to 2**63 passes validation) means no filter.
    ks = [min(p.top_k, vocab) if p.top_k > 0 else vocab for p in params]
    top_k = torch.tensor(ks, device=logits.device)
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
