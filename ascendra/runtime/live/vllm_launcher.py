"""vLLM engines as the router's instances: started here with our scheduler plugin, or already running.

`VLLMEngines` says where each engine is. A launched engine is `vllm`'s OpenAI server in its own
process group, its scheduler one of ours (`--scheduler-cls`), told where the router listens and how
to sign its frames through its environment (`vllm_engine/plugin_config.py`). An engine that runs
elsewhere was started by its operator with that environment (the README shows how); the router
only knows its URL and its role, and learns it is alive from its hello and reports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ascendra.core.config import SchedulerConfig
from ascendra.core.default_slo import DEFAULT_SLO
from ascendra.vllm_engine.plugin_config import PluginConfig

SCHEDULER_CLS = {"ascendra-lp": "ascendra.vllm_engine.scheduler.LPScheduler",
                 "ascendra-hp": "ascendra.vllm_engine.scheduler.HPScheduler"}
# The baselines run vLLM's own scheduling (chunked prefill, first come first served), reporting.
STOCK_CLS = "ascendra.vllm_engine.scheduler.StockScheduler"


@dataclass
class VLLMEngines:
    model: str  # what the engines load: a HF folder (the default model is exported to one)
    served_name: str  # the model name the engines answer to
    urls: list[str] = field(default_factory=list)  # engines that run elsewhere; empty: launch them
    host: str = "127.0.0.1"
    first_port: int = 8100
    device: str = "cpu"
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    threads: int = 1
    kv_cache_gib: int = 1
    max_num_seqs: int = 256
    profile: str | None = None
    default_slo: tuple[float, float] = (DEFAULT_SLO.ttft_ms / 1e3, DEFAULT_SLO.tbt_ms / 1e3)
    log_dir: Path | None = None
    step_log_dir: Path | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def launched(self) -> bool:
        return not self.urls

    def url(self, index: int) -> str:
        return self.urls[index] if self.urls else f"http://{self.host}:{self.first_port + index}"

    def plugin_config(self, index: int, scheduler: SchedulerConfig, endpoint: str, secret: bytes,
                      await_offload_check: bool = False) -> PluginConfig:
        step_log = str(self.step_log_dir / f"steps-{index}.jsonl") if self.step_log_dir else None
        ttft, tbt = self.default_slo
        return PluginConfig(router=endpoint, secret=secret, index=index, scheduler=scheduler,
                            scheduler_given=True, profile=self.profile, default_ttft=ttft, default_tbt=tbt,
                            step_log=step_log, await_offload_check=await_offload_check)

    def command(self, index: int, policy: str) -> list[str]:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", self.served_name, "--host", self.host,
               "--port", str(self.first_port + index), "--dtype", self.dtype,
               "--max-model-len", str(self.max_model_len), "--max-num-seqs", str(self.max_num_seqs),
               "--disable-uvicorn-access-log", *self.extra_args]
        return [*cmd, "--scheduler-cls", SCHEDULER_CLS.get(policy, STOCK_CLS)]

    def environment(self, index: int) -> dict[str, str]:
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        if self.device == "cpu":
            # Each engine's model on its own thread(s); no pinning, the cores are shared.
            env |= {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
                    "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(self.threads)}
        elif self.device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        return env


class VLLMServerWorker:
    """A `WorkerHandle` for one launched vLLM engine (its whole process group)."""

    def __init__(self, engines: VLLMEngines, index: int, policy: str, scheduler: SchedulerConfig,
                 endpoint: str, secret: bytes, await_offload_check: bool = False) -> None:
        env = dict(os.environ) | engines.environment(index)
        env |= engines.plugin_config(index, scheduler, endpoint, secret, await_offload_check).to_env()
        log_dir = engines.log_dir or Path.cwd()
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"vllm-{index}.log", "ab") as log:
            self.proc = subprocess.Popen(engines.command(index, policy), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self.proc.pid

    def exited(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        return f"vLLM engine {self.pid} exited with code {code}" if code >= 0 else \
            f"vLLM engine {self.pid} was killed by signal {-code}"

    def join(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            self.join(wait)


class ExternalWorker:
    """A `WorkerHandle` for an engine someone else runs: alive while it reports, never killed here."""

    pid = None

    def exited(self) -> str | None:
        return None

    def join(self, timeout: float) -> bool:
        return True

    def kill(self) -> None:
        pass


def _die_with_parent() -> None:
    """In the child before exec: a server killed outright (SIGKILL) takes its engines with it, as
    our own workers do (they watch their parent); vLLM cannot be taught to, the kernel can."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
