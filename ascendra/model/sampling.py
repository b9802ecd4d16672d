"""Sampling parameters and a batched sampler with a random generator per request."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true is not a number


def _finite(v: object, name: str) -> float:
    """v as a finite float, or ValueError: an int of 400 digits overflows float() itself."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{name} must be a number, got {_show(v)}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{name} must be a finite number, got {_show(v)}")
    return f


def _show(v: object) -> str:
    """A value for an error message, short whatever its size (a 4,000-digit int, a huge list)."""
    if isinstance(v, int) and v.bit_length() > 128:  # repr() itself refuses past 4,300 digits
        return f"an integer of {v.bit_length()} bits"
    text = repr(v) if isinstance(v, int | float | str | bool) or v is None else type(v).__name__
    return text if len(text) <= 40 else text[:30] + f"... ({len(text)} chars)"


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

    # The ranges a request may ask for: the one definition of the rule (the server's door relies on
    # it). Below GREEDY_BELOW a temperature divides logits into inf/NaN in float32, and its limit is
    # argmax anyway, so it is served as greedy (vLLM's _SAMPLING_EPS). top_k past any vocabulary is
    # "off"; the bound keeps it an index torch can hold. seed: torch's generators take 64 bits, and
    # OpenAI and vLLM use the signed range. Stop strings are checked after every token of the
    # batch, so their number and length are bounded (OpenAI allows 4).
    GREEDY_BELOW = 1e-5
    MAX_TOP_K = 2**31 - 1
    SEED_RANGE = (-(2**63), 2**63 - 1)
    MAX_STOP = 16
    MAX_STOP_CHARS = 1024

    def __post_init__(self) -> None:
        """Check every field's type and range; raises ValueError starting with the field's name."""
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {_show(self.max_tokens)}")
        temperature = _finite(self.temperature, "temperature")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {_show(self.temperature)}")
        object.__setattr__(self, "temperature", 0.0 if temperature < self.GREEDY_BELOW else temperature)
        top_p = _finite(self.top_p, "top_p")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {_show(self.top_p)}")
        object.__setattr__(self, "top_p", top_p)
        if not _is_int(self.top_k) or not -1 <= self.top_k <= self.MAX_TOP_K:
            raise ValueError(f"top_k must be -1 or 0 (disabled) or an integer from 1 to {self.MAX_TOP_K}, "
                             f"got {_show(self.top_k)}")
        lo, hi = self.SEED_RANGE
        if self.seed is not None and (not _is_int(self.seed) or not lo <= self.seed <= hi):
            raise ValueError(f"seed must be an integer from {lo} to {hi}, got {_show(self.seed)}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", [self.stop])
        if not isinstance(self.stop, list) or len(self.stop) > self.MAX_STOP or any(
            not isinstance(s, str) or not 0 < len(s) <= self.MAX_STOP_CHARS for s in self.stop
        ):
            raise ValueError(f"stop must be at most {self.MAX_STOP} non-empty strings of at most "
                             f"{self.MAX_STOP_CHARS} characters")
        if not isinstance(self.stop_token_ids, list) or any(
            not _is_int(t) or t < 0 for t in self.stop_token_ids
        ):
            raise ValueError("stop_token_ids must be a list of non-negative integers")

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
