"""What a vLLM engine's scheduler plugin is told through its environment survives the trip, and a
bad signing key is refused (no vLLM needed: the settings are plain data)."""

from __future__ import annotations

import pytest

from ascendra.core.config import SchedulerConfig
from ascendra.vllm_engine.plugin_config import PluginConfig, secret_from_hex


def test_settings_round_trip_through_the_environment():
    cfg = PluginConfig(router="ipc:///tmp/x", secret=b"k" * 16, index=1, await_offload_check=True,
                       scheduler=SchedulerConfig(max_num_batched_tokens=99, tbt_target=0.8),
                       scheduler_given=True, profile="cpu-smollm2", default_ttft=2.0, default_tbt=0.3,
                       step_log="/tmp/steps.jsonl")
    assert PluginConfig.from_env(cfg.to_env()) == cfg


def test_an_engine_alone_reports_to_nobody_and_takes_vllms_limits():
    cfg = PluginConfig.from_env({})
    assert cfg.router is None and not cfg.scheduler_given


@pytest.mark.parametrize("key", ["", "zz" * 16, "ab" * 15])
def test_a_short_or_malformed_key_is_refused(key):
    with pytest.raises(ValueError, match="ASCENDRA_SECRET"):
        secret_from_hex(key)
    with pytest.raises(ValueError, match="ASCENDRA_SECRET"):
        PluginConfig.from_env({"ASCENDRA_ROUTER": "tcp://127.0.0.1:5557", "ASCENDRA_SECRET": key})


@pytest.mark.parametrize("has_amx", [False, True])
def test_started_engines_project_with_the_profile_of_their_cpu(has_amx):
    """Engines `--engine vllm` starts here get the vLLM-CPU profile of this CPU's kind (`for_this_cpu`);
    engines elsewhere, none."""
    import argparse

    from ascendra.cli import serve_vllm
    from ascendra.engine.factory import load_model_info

    args, info = argparse.Namespace(engine="vllm", vllm_url=[], device="cpu"), load_model_info("default")
    name = serve_vllm.default_profile(args, info, has_amx=has_amx)
    assert name == ("vllm-cpu-amx-smollm2" if has_amx else serve_vllm.VLLM_CPU_PROFILE)
    args.vllm_url = ["lp=http://10.0.0.5:8000"]  # engines elsewhere: hardware we have not measured
    assert serve_vllm.default_profile(args, info, has_amx=has_amx) is None
