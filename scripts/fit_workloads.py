"""Fit the request-length distributions and write ascendra/workload/length_params.json.

    PYTHONPATH=. python3 scripts/fit_workloads.py [--data ../shared/data/traces] [--max-k 8]

Reads the public traces (never copied into the project), fits a Gaussian mixture on
(log prompt, log output) per workload, picks the number of components by BIC, and prints the fit
quality: real vs sampled mean / median / p90 / p99 of prompt and output lengths, and the
correlation of their logs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from ascendra.workload.fit import dequantized_log, fit_best_mixture
from ascendra.workload.lengths import PARAMS_FILE, model_from_dict

REPO = Path(__file__).resolve().parents[1]
SOURCE = (
    "Fitted by scripts/fit_workloads.py to the trace files shipped with the Vidur simulator repository "
    "(github.com/microsoft/vidur, MIT): splitwise_conv.csv and splitwise_code.csv are the Azure LLM "
    "inference trace 2023 (Azure/AzurePublicDataset, CC-BY; Patel et al., Splitwise, ISCA 2024), "
    "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv the arXiv summarization lengths "
    "(Llama-2 tokenizer). Only these derived numbers are committed."
)
FILES = {
    "conv": "splitwise_conv.csv",
    "code": "splitwise_code.csv",
    "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
}
# arXiv was filtered to prompt + output <= 4,096 tokens; the sampler keeps that cap.
MAX_TOTAL = {"arxiv": 4096}
CPU_SMALL_SCALE = 8


def read_lengths(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.genfromtxt(path, delimiter=",", names=True)
    return data["num_prefill_tokens"].astype(np.int64), data["num_decode_tokens"].astype(np.int64)


def stats(x: np.ndarray) -> dict[str, float]:
    q = np.percentile(x, [50, 90, 99])
    return {
        "mean": round(float(x.mean()), 1), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
        "min": int(x.min()), "max": int(x.max()),
    }


def fit_one(name: str, prompt: np.ndarray, output: np.ndarray, max_k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = np.stack([dequantized_log(prompt, rng), dequantized_log(output, rng)], axis=1)
    fit = fit_best_mixture(x, max_k=max_k, seed=seed)
    order = np.argsort(-fit.weights)
    return {
        "components": [
            {
                "weight": float(f"{fit.weights[j]:.7g}"),
                "mean": [float(f"{v:.7g}") for v in fit.means[j]],
                "cov": [[float(f"{v:.7g}") for v in row] for row in fit.covs[j]],
            }
            for j in order
        ],
        "prompt_min": int(prompt.min()), "prompt_max": int(prompt.max()),
        "output_min": int(output.min()), "output_max": int(output.max()),
        "max_total": MAX_TOTAL.get(name),
        "data_summary": {
            "rows": int(len(prompt)), "prompt": stats(prompt), "output": stats(output),
            "log_corr": round(float(np.corrcoef(np.log(prompt), np.log(output))[0, 1]), 3),
        },
    }


def quality_table(name: str, prompt: np.ndarray, output: np.ndarray, params: dict, seed: int) -> str:
    model = model_from_dict(name, params)
    sp, so = model.sample(100_000, np.random.default_rng(seed + 1))
    lines = [f"### {name} ({len(prompt)} rows, {len(params['components'])} components)", "",
             "| length | source | mean | p50 | p90 | p99 |", "| --- | --- | --- | --- | --- | --- |"]
    for label, real, sampled in (("prompt", prompt, sp), ("output", output, so)):
        for src, v in (("real", real), ("sampled", sampled)):
            s = stats(v)
            nums = " | ".join(f"{s[k]:.0f}" for k in ("mean", "p50", "p90", "p99"))
            lines.append(f"| {label} | {src} | {nums} |")
    rc = np.corrcoef(np.log(prompt), np.log(output))[0, 1]
    sc = np.corrcoef(np.log(sp), np.log(so))[0, 1]
    lines += ["", f"corr(log prompt, log output): real {rc:.3f}, sampled {sc:.3f}", ""]
    return "\n".join(lines)


def dump(obj: dict) -> str:
    """Indented JSON with innermost number lists kept on one line, so the file stays short to read."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[[^\[\]{}\"]*\]", lambda m: " ".join(m.group(0).split()), text) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "traces")
    ap.add_argument("--out", type=Path, default=REPO / "ascendra" / "workload" / PARAMS_FILE)
    ap.add_argument("--max-k", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out: dict = {"source": SOURCE, "workloads": {}, "derived": {
        "cpu-small": {"base": "conv", "scale": CPU_SMALL_SCALE,
                      "note": "conv lengths divided by scale, for CPU-speed live runs"},
    }}
    tables = []
    for name, fname in FILES.items():
        prompt, output = read_lengths(args.data / fname)
        params = fit_one(name, prompt, output, args.max_k, args.seed)
        out["workloads"][name] = params
        tables.append(quality_table(name, prompt, output, params, args.seed))
    args.out.write_text(dump(out))
    print("\n".join(tables))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
