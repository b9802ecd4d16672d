"""A system under test: how many instances, which roles, which policy and settings each runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ascendra.cluster.router import Role, Router, RouterConfig
from ascendra.core.block_manager import WATERMARK, BlockManager
from ascendra.core.config import KVCapacity
from ascendra.core.kv_transfer import KVTransfer
from ascendra.core.perf_model import PerfModel
from ascendra.core.policies import POLICIES, make_scheduler
from ascendra.core.scheduler import SchedulerConfig
from ascendra.engine.executor import Executor
from ascendra.engine.instance import Instance

SYSTEMS = ("vllm", "sarathi", "ascendra")
SARATHI_BUDGET = 512  # Sarathi-Serve's token budget for strict SLOs, when none is given


@dataclass
class SystemConfig:
    system: str = "ascendra"
    num_instances: int = 4
    # Ascendra only: how many of the instances are high-priority.
    num_hp: int = 1
    # vllm: max_num_batched_tokens (None: the model's context, vLLM's default without chunking);
    # sarathi: the token budget; ascendra: the hard cap under the predicted-time budget.
    token_budget: int | None = None
    max_num_seqs: int = SchedulerConfig.max_num_seqs
    lp_tbt_target: float = SchedulerConfig.tbt_target
    hp_tbt_target: float = 0.8  # tighter: an HP instance protects the decodes it already runs
    lp_ttft_target: float = SchedulerConfig.ttft_target
    hp_ttft_target: float = SchedulerConfig.ttft_target
    hp_max_num_seqs: int = 128
    offload_margin: float = RouterConfig.offload_margin
    hp_dispatch_weight: float = RouterConfig.hp_dispatch_weight
    watermark: float = WATERMARK
    # Ascendra: the SLOs every request may count on (a server's defaults, seconds) and the share of
    # the prompt throughput they give that tighter SLOs may not take away (core/budget.py); None:
    # every SLO shapes its instance's budget as tight as it asks.
    protected_ttft: float | None = None
    protected_tbt: float | None = None
    protected_share: float = SchedulerConfig.protected_share
    # Ascendra: roles follow the load (cluster/roles.py); num_hp is then the split at rest.
    adaptive_roles: bool = False
    # Ascendra: running requests move with their KV over this link when it pays (a name in
    # core/kv_transfer.LINKS, or a KVTransfer); None: no migration.
    kv_link: str | KVTransfer | None = None

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; choose one of {', '.join(SYSTEMS)}")
        if self.num_instances < 1:
            raise ValueError("a system needs at least one instance")
        if self.system == "ascendra" and not 0 <= self.num_hp < self.num_instances:
            raise ValueError(
                f"ascendra needs 0 <= HP instances < instances, got {self.num_hp} of {self.num_instances}"
            )

    def roles(self) -> list[str]:
        if self.system != "ascendra":
            return [Role.ANY] * self.num_instances
        return [Role.LP] * (self.num_instances - self.num_hp) + [Role.HP] * self.num_hp

    def policy(self, role: str) -> str:
        return {Role.LP: "ascendra-lp", Role.HP: "ascendra-hp"}.get(role, self.system)

    def scheduler_config(self, role: str, max_model_len: int) -> SchedulerConfig:
        if self.system == "vllm":
            budget = self.token_budget or max_model_len
            if budget < max_model_len:
                raise ValueError(
                    f"vllm without chunked prefill needs max_num_batched_tokens >= the "
                    f"context ({max_model_len}), got {budget}"
                )
            return SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=self.max_num_seqs)
        if self.system == "sarathi":
            return SchedulerConfig(
                max_num_batched_tokens=self.token_budget or SARATHI_BUDGET, max_num_seqs=self.max_num_seqs
            )
        # Past ~1024 tokens an iteration gains little prefill efficiency on the GPU profiles, while
        # longer iterations slow every decode (measured: relaxed-SLO capacity one step higher on both
        # GPU profiles with this cap than with 8192).
        cap = self.token_budget or 1024
        protected = dict(protected_ttft=self.protected_ttft, protected_tbt=self.protected_tbt,
                         protected_share=self.protected_share)
        if role == Role.HP:
            return SchedulerConfig(
                max_num_batched_tokens=cap,
                max_num_seqs=self.hp_max_num_seqs,
                tbt_target=self.hp_tbt_target,
                ttft_target=self.hp_ttft_target,
                max_idle_budget=cap,
                **protected,
            )
        return SchedulerConfig(
            max_num_batched_tokens=cap,
            max_num_seqs=self.max_num_seqs,
            tbt_target=self.lp_tbt_target,
            ttft_target=self.lp_ttft_target,
            max_idle_budget=cap,
            **protected,
        )

    def role_specs(self, max_model_len: int) -> dict[str, tuple[type, SchedulerConfig]]:
        """Each role's policy and config, for the router's role changes."""
        if self.system != "ascendra":
            return {}
        return {r: (POLICIES[self.policy(r)], self.scheduler_config(r, max_model_len))
                for r in (Role.LP, Role.HP)}

    def router_config(self, capacity: KVCapacity | None = None) -> RouterConfig:
        """The router's settings; `capacity` gives the KV bytes per token a migration moves."""
        adaptive = self.system == "ascendra" and self.adaptive_roles
        link = self.kv_link if self.system == "ascendra" else None
        if isinstance(link, str):
            if capacity is None or not capacity.kv_bytes_per_token:
                raise ValueError("migration needs the model's KV bytes per token (kv_bytes_per_token)")
            link = KVTransfer.link(link, capacity.kv_bytes_per_token)
        return RouterConfig(
            offload=self.system == "ascendra" and (self.num_hp > 0 or adaptive),
            offload_margin=self.offload_margin,
            hp_dispatch_weight=self.hp_dispatch_weight if self.num_hp or adaptive else math.inf,
            adaptive_roles=adaptive,
            migration=link,
        )

    def label(self) -> str:
        if self.system == "vllm":
            return f"vllm(mbt={self.token_budget or 'ctx'},seqs={self.max_num_seqs})"
        if self.system == "sarathi":
            return f"sarathi(budget={self.token_budget or SARATHI_BUDGET})"
        split = f"{self.num_instances - self.num_hp}LP:{self.num_hp}HP"
        adaptive = ",adaptive" if self.adaptive_roles else ""
        if self.kv_link is not None:
            adaptive += f",migrate={self.kv_link if isinstance(self.kv_link, str) else 'custom'}"
        return f"ascendra({split},margin={self.offload_margin}{adaptive})"


def build_cluster(
    config: SystemConfig,
    perf_model: PerfModel,
    capacity: KVCapacity,
    executor_for: Callable[[int], Executor],
) -> tuple[list[Instance], Router]:
    """One instance per role, each with its own scheduler and block pool of `capacity` and the
    executor `executor_for(index)` gives, and the router over them. The simulator drives these
    directly; the live server builds the same instances inside its worker processes."""
    roles = config.roles()
    instances = [
        Instance(
            make_scheduler(
                config.policy(role),
                config.scheduler_config(role, capacity.max_model_len),
                BlockManager(capacity.num_kv_blocks, capacity.block_size, config.watermark),
                perf_model,
            ),
            executor_for(i),
            emit_outputs=False,
        )
        for i, role in enumerate(roles)
    ]
    router = Router(list(instances), roles, config.router_config(capacity),
                    config.role_specs(capacity.max_model_len))
    return instances, router
