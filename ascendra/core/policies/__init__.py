"""One scheduling policy per file; `make_scheduler` builds one by name."""

from __future__ import annotations

from ascendra.core.block_manager import BlockManager
from ascendra.core.config import SchedulerConfig
from ascendra.core.perf_model import PerfModel
from ascendra.core.policies.ascendra_hp import AscendraHPScheduler
from ascendra.core.policies.ascendra_lp import AscendraLPScheduler
from ascendra.core.policies.sarathi import SarathiScheduler
from ascendra.core.policies.vllm import VLLMScheduler
from ascendra.core.scheduler import Scheduler

POLICIES: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (VLLMScheduler, SarathiScheduler, AscendraLPScheduler, AscendraHPScheduler)
}


def make_scheduler(
    policy: str, config: SchedulerConfig, block_manager: BlockManager, perf_model: PerfModel | None = None
) -> Scheduler:
    try:
        cls = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}") from None
    return cls(config, block_manager, perf_model)
