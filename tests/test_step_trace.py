"""Tracing a client's tokens to the engine steps that made them (`ascendra.bench.step_trace`), on
step logs written as the vLLM plugin writes them (the live check is in test_vllm_engine.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ascendra.bench.client import RequestResult
from ascendra.bench.step_trace import at_the_engine, engine_token_times


def _log(path: Path, rows: list[tuple[float, list]]) -> Path:
    path.write_text("".join(json.dumps({"end": end, "seconds": 0.1, "requests": reqs}) + "\n"
                            for end, reqs in rows) + "\n")
    return path


def test_a_token_comes_from_each_step_that_reaches_the_end_of_its_prompt(tmp_path):
    # "a": a 5-token prompt in chunks of 3 and 2, then one decode; "b" on the other engine.
    lp = _log(tmp_path / "steps-0.jsonl", [(10.0, [["a", 0, 3, 5]]), (10.5, [["a", 3, 2, 5]]),
                                           (11.0, [["a", 5, 1, 5]])])
    hp = _log(tmp_path / "steps-1.jsonl", [(10.2, [["b", 0, 2, 2]]), (10.4, [["b", 2, 1, 2]])])
    made = engine_token_times([lp, hp])
    assert made == {"a": [10.5, 11.0], "b": [10.2, 10.4]}

    def result(rid: str | None, times: list[float], ok: bool = True) -> RequestResult:
        return RequestResult(0, 0.0, 5, len(times), token_times=times, ok=ok, response_id=rid)

    traced, untraced = at_the_engine(
        [result("a", [0.6, 1.2]), result("b", [0.3, 0.5, 0.7]), result(None, [0.3]),
         result("b", [0.3, 0.5], ok=False)], made, wall_t0=10.0)
    assert [r.token_times for r in traced] == [[0.5, 1.0]]  # on the client's clock
    assert untraced == 3  # a token count that differs, no id, a failed request
