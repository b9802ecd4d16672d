"""The same requests live and simulated: what `benchmarks/fidelity.py` and the agreement test run.

It sits beside the benchmarks rather than in the package: it drives our server and our simulator
together, which no layer of `ascendra` (a load generator least of all) should depend on.

Live, a system is `ascendra serve` on loopback, the requests replayed open-loop from the client
with exact prompt lengths (token ids) and output lengths (ignore_eos), every token's time taken
where the client receives it. Simulated, exactly the same requests (arrival times, lengths, SLOs,
instances, KV blocks) run on the discrete-event simulator with the profile the live router uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from ascendra.bench.client import ClientOptions, RequestResult
from ascendra.bench.prompts import PromptBuilder
from ascendra.bench.report import to_record
from ascendra.bench.runner import RunOptions, build_requests, run_requests
from ascendra.bench.step_trace import at_the_engine, engine_token_times
from ascendra.cluster.system import SystemConfig
from ascendra.core.iteration_stats import (
    BAND_EDGES,
    LOG_RATIO_EDGES,
    IterationNoise,
    Moments,
    band_label,
    bucket_label,
)
from ascendra.core.request import SLO
from ascendra.metrics import Summary, summarize
from ascendra.profiles import Profile
from ascendra.runtime.sim import simulate
from ascendra.server.launch import ServerProcess, metric
from ascendra.workload import WorkItem, to_requests

METRICS = (
    "ttft_p50", "ttft_p90", "ttft_p99", "tbt_p50", "tbt_p90", "tbt_p99",
    "ttft_attainment", "tbt_attainment", "attainment",
)
COUNTS = ("offloads", "preemptions", "migrations", "role_changes")


ASCENDRA_SPLITS = ("ascendra", "adaptive", "migrate")  # the Ascendra systems with an HP instance


@dataclass
class Setup:
    """What both sides share: instances, KV pool, SLOs, profile, Sarathi's budget."""

    profile: Path
    slo: SLO
    instances: int = 2
    num_blocks: int = 512
    token_budget: int = 256  # Sarathi's; vLLM runs unchunked and Ascendra sizes its own chunks
    model: str = "default"
    engine: str = "ascendra"  # or "vllm": the live side runs vLLM engines with our scheduler plugin
    vllm_first_port: int = 8400
    step_logs: Path | None = None  # vLLM engines: where their step logs go, one folder per system

    def num_hp(self, system: str) -> int:
        return 1 if system in ASCENDRA_SPLITS and self.instances > 1 else 0  # lp-only: none

    @staticmethod
    def policy(system: str) -> str:
        """The `--system` a name runs: lp-only is Ascendra with every instance LP (no HP, no offload);
        adaptive and migrate are Ascendra with roles following the load, migrate with running
        requests moved with their KV over our live path (its measured link, `cpu-loopback`)."""
        return "ascendra" if system in ("lp-only", *ASCENDRA_SPLITS) else system

    @staticmethod
    def modes(system: str) -> dict:
        """SystemConfig fields of the Ascendra variants; `serve_args` turns them into flags."""
        return {"adaptive": {"adaptive_roles": True},
                "migrate": {"adaptive_roles": True, "kv_link": "cpu-loopback"}}.get(system, {})

    def budget(self, system: str) -> int | None:
        return self.token_budget if system == "sarathi" else None


@dataclass
class Side:
    summary: Summary
    ttfts: list[float]
    counts: dict[str, float] = field(default_factory=dict)
    calibration: Calibration | None = None  # live: how its iterations ran against the profile
    at_engine: Side | None = None  # live on vLLM engines: the same requests, tokens timed at the engine


@dataclass
class Calibration:
    """What a live run measured of its iterations against the profile: the serving loop's gap
    after each, and log(measured / predicted) per band of predicted duration (the host's speed on
    the day, the model's error by iteration length, the scatter) with its lag-1 correlation."""

    gap: float
    bands: list[Moments]
    correlation: float

    @classmethod
    def from_metrics(cls, text: str, gap: float, correlation: float) -> Calibration:
        """Pooled over the instances (the `ascendra_instance_iteration_log_ratio_*` gauges)."""
        def stat(name: str, b: int, **labels: str) -> float:
            return metric(text, f"ascendra_instance_iteration_log_ratio_{name}", band=band_label(b), **labels)

        def band(b: int) -> Moments:
            buckets = [bucket_label(k) for k in range(len(LOG_RATIO_EDGES) + 1)]
            return Moments(int(stat("count", b)), stat("sum", b), stat("squares", b),
                           [int(stat("bucket", b, le=le)) for le in buckets],
                           [stat("bucket_sum", b, le=le) for le in buckets])

        return cls(gap, [band(b) for b in range(len(BAND_EDGES) + 1)], correlation)

    @classmethod
    def pooled(cls, runs: Sequence[Calibration]) -> Calibration:
        """Several runs' measurements as one, each weighed by its iterations."""
        n = [sum(m.n for m in c.bands) for c in runs]
        total = sum(n) or 1
        bands = [Moments.pooled(c.bands[b] for c in runs) for b in range(len(BAND_EDGES) + 1)]
        return cls(sum(k * c.gap for k, c in zip(n, runs, strict=True)) / total, bands,
                   sum(k * c.correlation for k, c in zip(n, runs, strict=True)) / total)

    def noise(self) -> IterationNoise:
        return IterationNoise.from_moments(self.bands, self.correlation)


def serve_args(system: str, setup: Setup) -> list[str]:
    slo = setup.slo
    args = [
        "--model", setup.model, "--system", setup.policy(system), "--instances", str(setup.instances),
        "--hp-instances", str(setup.num_hp(system)), "--profile", str(setup.profile),
        "--num-blocks", str(setup.num_blocks), "--threads-per-instance", "1",
        "--ttft-slo-ms", str(1e3 * slo.ttft), "--tbt-slo-ms", str(1e3 * slo.tbt),
    ]
    if setup.budget(system) is not None:
        args += ["--token-budget", str(setup.budget(system))]
    modes = setup.modes(system)
    if modes.get("adaptive_roles"):
        args.append("--adaptive-roles")
    if modes.get("kv_link"):
        args += ["--migration", modes["kv_link"]]
    if setup.engine == "vllm":  # the engines' KV is their own (1 GiB each); the door reads --num-blocks
        args += ["--engine", "vllm", "--vllm-first-port", str(setup.vllm_first_port)]
        if setup.step_logs is not None:
            args += ["--vllm-log-dir", str(setup.step_logs / system)]
    return args


def wait_for_engines(setup: Setup) -> None:
    """vLLM engines say hello to the router before their HTTP servers listen: wait for those too,
    so that the first requests' TTFTs measure serving, not start-up."""
    if setup.engine != "vllm":
        return
    deadline = time.time() + 900
    for i in range(setup.instances):
        url = f"http://127.0.0.1:{setup.vllm_first_port + i}/health"
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the vLLM engines did not start")
            time.sleep(1.0)


def run_live(system: str, items: Sequence[WorkItem], setup: Setup) -> Side:
    with ServerProcess(serve_args(system, setup), startup_timeout=900) as srv:
        wait_for_engines(setup)
        model = httpx.get(f"{srv.url}/v1/models", timeout=10).json()["data"][0]["id"]
        reqs = build_requests(list(items), PromptBuilder.token_ids(), seed=0, chat=False)
        opts = ClientOptions(base_url=f"{srv.url}/v1", model=model, timeout=600.0)
        wall = time.time() - time.perf_counter()
        run = RunOptions(progress=False, max_duration=900.0)
        results, duration = asyncio.run(run_requests(reqs, opts, run))
        wall_t0 = wall + time.perf_counter() - duration  # the client's zero on the engines' clock
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    records = [to_record(r, setup.slo.ttft, setup.slo.tbt) for r in results]
    busy = metric(text, "ascendra_instance_busy_seconds")
    predicted = metric(text, "ascendra_instance_predicted_busy_seconds")
    gaps = metric(text, "ascendra_instance_iteration_gaps")
    steps = [metric(text, "ascendra_instance_steps", instance=str(i)) for i in range(setup.instances)]

    def over_steps(name: str) -> float:  # a per-instance figure, weighed by the iterations behind it
        weighed = sum(n * metric(text, name, instance=str(i)) for i, n in enumerate(steps))
        return weighed / sum(steps) if sum(steps) else 0.0

    counts = {
        "offloads": metric(text, "ascendra_offloads_total"),
        "offloads_refused": metric(text, "ascendra_offloads_refused_total"),  # live only: steals too late
        "preemptions": metric(text, "ascendra_preemptions_total"),
        "migrations": metric(text, "ascendra_migrations_total"),
        "role_changes": metric(text, "ascendra_role_changes_total"),
        # How much slower the instances ran than the profile predicts, over the iterations they
        # really ran: the machine's speed during the run (noisy neighbours), which no simulator
        # run ahead of time can know.
        "slowdown": busy / predicted if predicted else float("nan"),
        # The serving loop's own time per iteration (detokenizing, reporting, IPC).
        "gap": metric(text, "ascendra_instance_iteration_gap_seconds") / gaps if gaps else 0.0,
        # Whether slow iterations came in runs.
        "spread_correlation": over_steps("ascendra_instance_iteration_spread_correlation"),
    }
    cal = Calibration.from_metrics(text, counts["gap"], counts["spread_correlation"])
    counts["spread"] = Moments.pooled(cal.bands).sd  # how single iterations scattered around it
    live = Side(summarize(records), [r.ttft for r in records if r.ttft is not None], counts, cal)
    if setup.engine == "vllm" and setup.step_logs is not None:
        live.at_engine = traced_side(results, setup, system, wall_t0, counts)
    return live


def traced_side(results: Sequence[RequestResult], setup: Setup, system: str, wall_t0: float,
                counts: dict[str, float]) -> Side:
    """The live run as the engines made its tokens (`step_trace`), before vLLM's API server, our
    door and the client: what the simulator models."""
    made = engine_token_times(sorted((setup.step_logs / system).glob("steps-*.jsonl")))
    traced, untraced = at_the_engine(results, made, wall_t0)
    records = [to_record(r, setup.slo.ttft, setup.slo.tbt) for r in traced]
    return Side(summarize(records), [r.ttft for r in records if r.ttft is not None],
                counts | {"untraced": untraced})


def run_sim(
    system: str, items: Sequence[WorkItem], setup: Setup, profile: Profile, seeds: int = 8,
    noise: IterationNoise | None = None,
) -> Side:
    """Where iterations scatter (`noise`, or the profile's spread), one simulation is one draw,
    and attainment moves by several points from draw to draw (a live run is one draw too): the
    requests of `seeds` draws are pooled, so the figures are the simulator's expectation."""
    perf, capacity = profile.perf_model, replace(profile.capacity, num_kv_blocks=setup.num_blocks)
    cfg = SystemConfig(setup.policy(system), setup.instances, num_hp=setup.num_hp(system),
                       token_budget=setup.budget(system), **setup.modes(system))
    draws = seeds if noise is not None or perf.spread > 0 else 1
    requests, counts = [], {"offloads": 0.0, "preemptions": 0.0, "migrations": 0.0, "role_changes": 0.0}
    for seed in range(draws):
        res = simulate(cfg, perf, to_requests(list(items), lambda _: setup.slo), seed=seed, noise=noise,
                       capacity=capacity)
        requests += res.requests
        counts["offloads"] += res.num_offloads / draws
        counts["preemptions"] += res.num_preemptions / draws
        counts["migrations"] += res.num_migrations / draws
        counts["role_changes"] += res.num_role_changes / draws
    return Side(summarize(requests), [r.ttft for r in requests if r.ttft is not None], counts)


def run_sim_calibrated(system: str, items: Sequence[WorkItem], setup: Setup, profile: Profile,
                       cal: Calibration, seeds: int = 8) -> Side:
    """The profile as a live run found the machine: each iteration followed by the serving loop's
    gap, and drawn around its prediction as live iterations of its length ran."""
    perf = profile.perf_model
    with_gap = replace(perf, coef=[perf.coef[0] + cal.gap, *perf.coef[1:]])
    return run_sim(system, items, setup, replace(profile, perf_model=with_gap), seeds, noise=cal.noise())


def error(name: str, sim: float, live: float) -> float:
    """Attainment: difference in points (as a share); latencies: relative error."""
    if "attainment" in name:
        return sim - live
    return (sim - live) / live if live else float("nan")


def compare_rows(system: str, live: Side, columns: dict[str, Side]) -> list[dict]:
    """Live beside each simulated column, with its error."""
    rows = []
    for name in METRICS:
        lv = getattr(live.summary, name)
        unit = "pts" if "attainment" in name else "%"
        row = {"system": system, "metric": name, "live": lv}
        for col, side in columns.items():
            sv = getattr(side.summary, name)
            row[col] = sv
            row[f"{col}: error"] = f"{100 * error(name, sv, lv):+.1f} {unit}"
        rows.append(row)
    for name in COUNTS:
        row = {"system": system, "metric": name, "live": live.counts[name]}
        for col, side in columns.items():
            row |= {col: side.counts[name], f"{col}: error": ""}
        rows.append(row)
    return rows
