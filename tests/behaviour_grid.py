"""The behaviour grid: `ascendra simulate --json` figures for a fixed set of systems, seeds, profiles
and SLOs. A restructuring must leave every figure as it was (tests/test_behaviour_grid.py);
`python tests/behaviour_grid.py --write` records them anew after an intended change of behaviour."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from ascendra.cli import main as ascendra_main

RECORD = Path(__file__).resolve().parent / "data" / "behaviour_grid.json"
SYSTEMS = ("vllm", "sarathi", "ascendra")
SEEDS = (0, 1, 2)
# Rates near each setting's capacity edge, where scheduling decisions decide the outcome.
SETTINGS = {
    ("a100-llama-3-8b", "strict"): 22.0,
    ("a100-llama-3-8b", "relaxed"): 27.0,
    ("h100-llama-2-7b", "strict"): 34.0,
    ("h100-llama-2-7b", "relaxed"): 40.0,
}
NUM_REQUESTS = 1000
FIGURES = ("attainment", "goodput", "iterations", "offloads", "preemptions")


def cases() -> list[tuple[str, str, str, int, float]]:
    return [(sys_, prof, slo, seed, rate) for (prof, slo), rate in SETTINGS.items()
            for sys_ in SYSTEMS for seed in SEEDS]


def key(system: str, profile: str, slo: str, seed: int) -> str:
    return f"{system}/{profile}/{slo}/{seed}"


def run_case(system: str, profile: str, slo: str, seed: int, rate: float) -> dict[str, float]:
    """One `ascendra simulate --json` run (the CLI entry point, in this process)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = ascendra_main(["simulate", "--system", system, "--profile", profile, "--slo", slo,
                                "--seed", str(seed), "--rate", str(rate), "--num-requests",
                                str(NUM_REQUESTS), "--json", str(out)])
        assert rc == 0, f"ascendra simulate failed for {key(system, profile, slo, seed)}"
        data = json.loads(out.read_text())
    return {f: round(float(data[f]), 4) for f in FIGURES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"record the figures in {RECORD}")
    args = ap.parse_args()
    figures = {key(s, p, o, seed): run_case(s, p, o, seed, rate) for s, p, o, seed, rate in cases()}
    if args.write:
        RECORD.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
