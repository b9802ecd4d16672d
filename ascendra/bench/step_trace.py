"""Each token a client received, traced to the vLLM engine step that made it.

The plugin's step log (`ASCENDRA_STEP_LOG`, one file per engine in `--vllm-log-dir`) records, per
step, when its output was taken in and, per request, the router's id and the tokens the step
computed. A request's token comes out of every step that reaches the end of its prompt (its last
prompt chunk, then each decode). So each request's token times as the engine made them stand beside
the times its client saw them, and the difference is the path after the engine: vLLM's API server,
our door and the client, on the same cores. The simulator models the engine, not that path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from ascendra.bench.client import RequestResult
from ascendra.profiles.steps import step_rows


def engine_token_times(paths: Iterable[Path]) -> dict[str, list[float]]:
    """Router request id -> the wall-clock ends of the steps that made its tokens, in order."""
    made: dict[str, list[float]] = {}
    for row in step_rows(paths):
        for rid, before, n, prompt in row.get("requests") or ():
            if before + n >= prompt:
                made.setdefault(rid, []).append(row["end"])
    return {rid: sorted(times) for rid, times in made.items()}


def at_the_engine(results: Sequence[RequestResult], made: dict[str, list[float]], wall_t0: float
                  ) -> tuple[list[RequestResult], int]:
    """The client's results with each token's time replaced by when the engine made it, on the
    client's clock (seconds from `wall_t0`), matched by the answer's id (our server's ids are the
    router's); and how many results could not be traced (failed, or a token count that differs)."""
    traced = []
    for r in results:
        times = made.get(r.response_id or "", [])
        if r.ok and len(times) == len(r.token_times):
            traced.append(replace(r, token_times=[t - wall_t0 for t in times]))
    return traced, len(results) - len(traced)
