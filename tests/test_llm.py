"""The offline API and CLI on the real default model (SmolLM2 from its GGUF)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ascendra.core.batch import BatchShape
from ascendra.engine.llm import LLM
from ascendra.model.sampling import SamplingParams
from ascendra.profiles import load_profile

torch.set_num_threads(2)
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)
PROMPTS = ["The capital of France is", "List three colours:", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def llm() -> LLM:
    # float32: its matmuls give a row the same result whatever the batch (bfloat16 oneDNN kernels
    # change with the row count, so batch-equals-alone holds only to the argmax's tolerance there).
    return LLM(policy="sarathi", token_budget=16, dtype="float32")  # small budget: prompts are chunked


def test_batch_equals_one_by_one_and_every_policy_agrees(llm: LLM):
    batch = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    alone = [llm.generate(p, GREEDY)[0].token_ids for p in PROMPTS]
    assert batch == alone and all(len(t) == 12 for t in batch)
    for policy in ("vllm", "ascendra-lp", "ascendra-hp"):
        other = LLM(policy=policy, token_budget=4096, dtype="float32")
        assert [o.token_ids for o in other.generate(PROMPTS, GREEDY)] == batch, policy


def test_text_stop_strings_and_seeds(llm: LLM):
    out = llm.generate("Count: one, two, three,", SamplingParams(max_tokens=30, temperature=0.0, stop=[","]))[
        0
    ]
    assert out.finish_reason == "stop" and "," not in out.text
    a = llm.generate("Once upon a time", SamplingParams(max_tokens=10, temperature=1.0, seed=5))[0]
    b = llm.generate("Once upon a time", SamplingParams(max_tokens=10, temperature=1.0, seed=5))[0]
    assert a.token_ids == b.token_ids and a.text == llm.tokenizer.decode(a.token_ids)


@pytest.mark.parametrize(
    "prompt, params, message",
    [
        ("", GREEDY, "empty"),
        ("word " * 9000, GREEDY, "maximum context length"),
        ("hi", SamplingParams(max_tokens=100_000, temperature=0.0), "maximum context length"),
    ],
)
def test_bad_input_is_a_clear_error(llm: LLM, prompt, params, message):
    with pytest.raises(ValueError, match=message):
        llm.generate(prompt, params)


def test_absurd_params_are_rejected_before_any_work():
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=-1)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-0.5)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from ascendra.cli import main; raise SystemExit(main())", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_cli_prints_text_and_bad_paths_get_one_line():
    ok = run_cli("generate", "--prompt", "The sky is", "--max-tokens", "6", "--threads", "1")
    assert ok.returncode == 0 and ok.stdout.strip()
    bad = run_cli("generate", "--prompt", "x", "--model", "/nonexistent/model")
    assert bad.returncode == 2 and "model not found" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # end to end: profiling
def test_profile_cli_writes_a_loadable_profile(tmp_path):
    out = tmp_path / "p.json"
    res = run_cli("profile", "--model", "dummy:tiny", "--quick", "--repeats", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    perf = load_profile(out).perf_model
    assert perf.heldout_mape is not None and json.loads(out.read_text())["notes"]["points"] > 10
    assert perf.predict(BatchShape.of([(0, 64)])) > perf.predict(BatchShape.of([(0, 8)])) > 0
