"""Fitted request-length distributions: sample (prompt_len, output_len) pairs.

Each workload is a Gaussian mixture on (log prompt length, log output length) fitted by
`scripts/fit_workloads.py` to a public trace; the parameters ship in `length_params.json`, so the
project needs no trace files at run time. Samples are rounded to integers and clipped to the range
seen in the data; a workload whose data obeys a total-length cap (arXiv: prompt + output <= 4,096)
redraws the pairs that break it.

A name of the form `NAME/FACTOR` (for example `conv/8`) divides a workload's lengths by FACTOR:
the same shape, small enough for CPU-speed live runs. `cpu-small` is such a derived workload,
declared in the JSON file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np

PARAMS_FILE = "length_params.json"
# Rejection rounds for the total-length cap before falling back to truncating the prompt.
_MAX_REDRAWS = 50


@dataclass(frozen=True, slots=True)
class LengthModel:
    name: str
    weights: tuple[float, ...]
    means: tuple[tuple[float, float], ...]  # per component, (log prompt, log output)
    covs: tuple[tuple[tuple[float, float], tuple[float, float]], ...]
    prompt_min: int
    prompt_max: int
    output_min: int
    output_max: int
    max_total: int | None = None

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n (prompt_len, output_len) pairs as two int64 arrays, deterministic for a given rng state."""
        prompt, output = self._draw(n, rng)
        if self.max_total is not None:
            for _ in range(_MAX_REDRAWS):
                bad = np.flatnonzero(prompt + output > self.max_total)
                if len(bad) == 0:
                    break
                prompt[bad], output[bad] = self._draw(len(bad), rng)
            output = np.minimum(output, self.max_total - 1)
            prompt = np.minimum(prompt, self.max_total - output)
        return prompt, output

    def _draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        weights = np.asarray(self.weights)
        comp = rng.choice(len(weights), size=n, p=weights / weights.sum())
        chol = np.linalg.cholesky(np.asarray(self.covs))
        z = rng.standard_normal((n, 2))
        x = np.asarray(self.means)[comp] + np.einsum("nij,nj->ni", chol[comp], z)
        prompt = np.clip(np.rint(np.exp(x[:, 0])), self.prompt_min, self.prompt_max).astype(np.int64)
        output = np.clip(np.rint(np.exp(x[:, 1])), self.output_min, self.output_max).astype(np.int64)
        return prompt, output

    def scaled(self, factor: float) -> LengthModel:
        """The same distribution with every length divided by factor (at least 1 token)."""
        if factor <= 0:
            raise ValueError(f"length scale factor must be positive, got {factor}")
        shift = np.log(factor)
        return replace(
            self,
            name=f"{self.name}/{factor:g}",
            means=tuple((mp - shift, mo - shift) for mp, mo in self.means),
            prompt_min=max(1, round(self.prompt_min / factor)),
            prompt_max=max(1, round(self.prompt_max / factor)),
            output_min=max(1, round(self.output_min / factor)),
            output_max=max(1, round(self.output_max / factor)),
            max_total=None if self.max_total is None else max(2, round(self.max_total / factor)),
        )


def model_from_dict(name: str, d: dict) -> LengthModel:
    comps = d["components"]
    return LengthModel(
        name=name,
        weights=tuple(float(c["weight"]) for c in comps),
        means=tuple((float(c["mean"][0]), float(c["mean"][1])) for c in comps),
        covs=tuple(
            ((float(c["cov"][0][0]), float(c["cov"][0][1])), (float(c["cov"][1][0]), float(c["cov"][1][1])))
            for c in comps
        ),
        prompt_min=int(d["prompt_min"]),
        prompt_max=int(d["prompt_max"]),
        output_min=int(d["output_min"]),
        output_max=int(d["output_max"]),
        max_total=None if d.get("max_total") is None else int(d["max_total"]),
    )


def _params() -> dict:
    # Read on each call (a few KB): cheaper than reasoning about a cached, mutable dict.
    text = resources.files("ascendra.workload").joinpath(PARAMS_FILE).read_text()
    return json.loads(text)


def workload_names() -> list[str]:
    """Names accepted by `load_length_model` (besides the `NAME/FACTOR` form)."""
    p = _params()
    return sorted([*p["workloads"], *p.get("derived", {})])


def load_length_model(name: str) -> LengthModel:
    """The fitted model for `conv`, `code`, `arxiv`, `cpu-small`, or `NAME/FACTOR` of any of them."""
    p = _params()
    if "/" in name:
        base, _, factor = name.rpartition("/")
        try:
            f = float(factor)
        except ValueError:
            raise ValueError(f"bad length scale in workload name {name!r}: {factor!r}") from None
        return load_length_model(base).scaled(f)
    if name in p["workloads"]:
        return model_from_dict(name, p["workloads"][name])
    derived = p.get("derived", {})
    if name in derived:
        spec = derived[name]
        return replace(load_length_model(spec["base"]).scaled(float(spec["scale"])), name=name)
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(workload_names())} (or NAME/FACTOR)")
