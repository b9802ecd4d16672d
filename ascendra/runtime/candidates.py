"""The columns of a capacity comparison: each a named list of system configurations, whose best
one (highest capacity at the strictest target) stands for it.

Baselines are swept over their own knobs, so Ascendra is compared with them at their best. The
Ascendra columns form an ablation: `lp-only` (every instance ascendra-lp: the out-of-order policy
alone, no HP pool, no offload), `ascendra` (the best static LP:HP split with offloading) and
`adaptive` (the same splits at rest, roles following the load: cluster/roles.py) and `migrate`
(adaptive, plus running requests moved with their KV: cluster/migration.py). Adding a variant
is one entry in CANDIDATES.
"""

from __future__ import annotations

from collections.abc import Callable

from ascendra.cluster.system import SystemConfig

# (instances, sweep the baselines wider, the model's context length) -> the configurations tried
Candidates = Callable[[int, bool, int], list[SystemConfig]]

BASELINES = ("vllm", "sarathi")  # what "vs best baseline" divides by
LP_ONLY = "lp-only"  # what "vs LP-only" divides by: the partition's own contribution


def _vllm(n: int, sweep: bool, ctx: int) -> list[SystemConfig]:
    # No chunked prefill: the batched-token budget cannot go below the context.
    budgets = [ctx, 2 * ctx] if sweep else [ctx]
    seqs = [64, 128, 256] if sweep else [64, 256]
    return [SystemConfig("vllm", n, token_budget=b, max_num_seqs=s) for b in budgets for s in seqs]


def _sarathi(n: int, sweep: bool, ctx: int) -> list[SystemConfig]:
    budgets = [256, 384, 512, 768, 1024, 2048, 4096] if sweep else [256, 384, 512, 1024]
    return [SystemConfig("sarathi", n, token_budget=b) for b in budgets]


def static_splits(n: int, hp: list[int] | None = None, adaptive: bool = False,
                  kv_link: str | None = None) -> list[SystemConfig]:
    """Ascendra with each static number of HP instances in `hp` (default 1 to half the instances);
    with `adaptive`, that many at rest, roles following the load; with `kv_link`, running requests
    migrating over it."""
    return [SystemConfig("ascendra", n, num_hp=h, adaptive_roles=adaptive, kv_link=kv_link)
            for h in (hp or range(1, max(1, n // 2) + 1))]


CANDIDATES: dict[str, Candidates] = {
    "vllm": _vllm,
    "sarathi": _sarathi,
    LP_ONLY: lambda n, sweep, ctx: [SystemConfig("ascendra", n, num_hp=0)],
    "ascendra": lambda n, sweep, ctx: static_splits(n),
    "adaptive": lambda n, sweep, ctx: static_splits(n, adaptive=True),
    # The GPU profiles' instances are GPUs of one node: PCIe between them, the slower common link.
    "migrate": lambda n, sweep, ctx: static_splits(n, adaptive=True, kv_link="pcie4"),
}


# What `ascendra capacity` compares unless told: `migrate` is asked for by name (`--systems`): on the
# GPU profiles it moves a few requests and changes no capacity (docs/benchmarks.md section 12), at
# two more configurations' search time.
DEFAULT_COLUMNS = ("vllm", "sarathi", LP_ONLY, "ascendra", "adaptive")


def candidate_configs(name: str, *, instances: int, sweep: bool, max_model_len: int) -> list[SystemConfig]:
    """The configurations tried for the column `name`; its capacity is the best of them."""
    try:
        make = CANDIDATES[name]
    except KeyError:
        raise ValueError(f"unknown system {name!r}; choose from {', '.join(CANDIDATES)}") from None
    return make(instances, sweep, max_model_len)
