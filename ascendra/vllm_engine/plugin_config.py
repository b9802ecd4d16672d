"""What an Ascendra scheduler inside a vLLM engine is told at start-up, through its environment.

vLLM builds the scheduler itself (`--scheduler-cls`), with no way to pass it arguments, so the
router's launcher (or an operator starting vLLM by hand, see the README) sets these variables. An
engine started without ASCENDRA_ROUTER runs the policy alone, reporting to nobody.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ascendra.core.config import SchedulerConfig
from ascendra.core.default_slo import DEFAULT_SLO

ROUTER = "ASCENDRA_ROUTER"  # the router's worker socket: ipc://... or tcp://host:port
SECRET = "ASCENDRA_SECRET"  # hex of the key that signs every frame (see runtime/live/wire.py)
INDEX = "ASCENDRA_INDEX"  # this engine's place in the router's list of instances
SCHEDULER = "ASCENDRA_SCHEDULER"  # JSON of SchedulerConfig
PROFILE = "ASCENDRA_PROFILE"  # performance profile: a path or a shipped name
SLO = "ASCENDRA_DEFAULT_SLO"  # "TTFT_S,TBT_S": the SLOs of a request that carries none
STEP_LOG = "ASCENDRA_STEP_LOG"  # a JSON-lines file of every step's shape and duration, to fit from
AWAIT_CHECK = "ASCENDRA_AWAIT_CHECK"  # "1": an LP engine holds a new arrival's first step for the router

# The keys of `vllm_xargs` our router sets on every request it sends to a vLLM engine.
XARG_ID, XARG_ARRIVAL, XARG_TTFT, XARG_TBT = "ascendra_id", "ascendra_arrival", "ttft_slo", "tbt_slo"
XARG_TBT_MEAN = "tbt_mean"  # 1: the TBT SLO bounds the mean gap (`SLO.tbt_mean`); vLLM's xargs take numbers


def secret_from_hex(text: str) -> bytes:
    """The frames' signing key as the operator gives it (ASCENDRA_SECRET): hex, at least 16 bytes."""
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ValueError(f"{SECRET} must hold at least 16 bytes in hex")
    return secret


@dataclass
class PluginConfig:
    router: str | None = None
    secret: bytes = b""
    index: int = 0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    scheduler_given: bool = False  # False: the policy takes vLLM's own token and sequence limits
    profile: str | None = None
    default_ttft: float = DEFAULT_SLO.ttft_ms / 1e3  # what `ascendra serve` gives such a request too
    default_tbt: float = DEFAULT_SLO.tbt_ms / 1e3
    step_log: str | None = None
    await_offload_check: bool = False  # an LP engine under a router that offloads

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PluginConfig:
        env = os.environ if env is None else env
        cfg = cls(router=env.get(ROUTER) or None, profile=env.get(PROFILE) or None,
                  step_log=env.get(STEP_LOG) or None, index=int(env.get(INDEX, "0")),
                  await_offload_check=env.get(AWAIT_CHECK) == "1")
        if cfg.router:
            cfg.secret = secret_from_hex(env.get(SECRET, ""))
        if env.get(SCHEDULER):
            cfg.scheduler = SchedulerConfig(**json.loads(env[SCHEDULER]))
            cfg.scheduler_given = True
        if env.get(SLO):
            ttft, tbt = (float(x) for x in env[SLO].split(","))
            cfg.default_ttft, cfg.default_tbt = ttft, tbt
        return cfg

    def to_env(self) -> dict[str, str]:
        """The variables that give an engine this configuration."""
        env = {INDEX: str(self.index), SCHEDULER: json.dumps(asdict(self.scheduler)),
               SLO: f"{self.default_ttft!r},{self.default_tbt!r}"}
        if self.router:
            env |= {ROUTER: self.router, SECRET: self.secret.hex()}
        if self.profile:
            env[PROFILE] = self.profile
        if self.step_log:
            env[STEP_LOG] = self.step_log
        if self.await_offload_check:
            env[AWAIT_CHECK] = "1"
        return env
