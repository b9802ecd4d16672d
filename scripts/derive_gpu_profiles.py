"""Derive the shipped GPU performance profiles (ascendra/profiles/<gpu>-<model>.json).

Iteration time = embedding + num_layers * (linear ops of one layer at T tokens, interpolated in
log-log from Vidur's measured mlp.csv, TP1 medians) + attention (roofline, efficiencies calibrated on
Vidur's A100 Llama-2-70B TP2 attention.csv) + LM head on the sampled rows (roofline, efficiencies of
the measured linear ops) + CPU overheads (Vidur's cpu_overheads.csv: schedule, sampler, prepare
inputs, process outputs; its rows are CodeLlama-34B TP2). A few thousand synthetic iterations
timed this way are fitted by `fit_perf_model`. Only the fitted numbers are written; the data stays
in ../shared/data.

    PYTHONPATH=. python3 scripts/derive_gpu_profiles.py [DATA_DIR] [--out ascendra/profiles]
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ascendra.core.batch import BatchShape
from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import isolated_decode_time, isolated_prefill_time
from ascendra.profiles import Profile, load_profile
from ascendra.profiles.fit import fit_perf_model, mape

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
# Per-layer linear ops of one Llama block; `add` is the residual add, done twice per block (after
# attention and after the MLP) in an unfused implementation, so it counts twice.
LAYER_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
    "add",
)
MATMUL_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_flops: float  # dense bf16, FLOP/s
    bandwidth: float  # HBM, B/s
    memory: float  # bytes


@dataclass(frozen=True)
class Model:
    name: str
    vidur_dir: str
    num_layers: int
    hidden: int
    n_q: int
    n_kv: int
    head_dim: int
    inter: int
    vocab: int  # real vocabulary (Vidur pads Llama-2's to 32768 in its rows)
    params: float
    max_model_len: int
    max_chunk: int  # largest prompt chunk / hybrid budget generated for the fit


GPUS = {
    "a100": Gpu("A100-SXM4-80GB", 312e12, 2.0e12, 80 * GIB),
    "h100": Gpu("H100-SXM5-80GB", 989e12, 3.35e12, 80 * GIB),
}
MODELS = {
    "llama-2-7b": Model(
        "Llama-2-7B", "Llama-2-7b-hf", 32, 4096, 32, 32, 128, 11008, 32000, 6.74e9, 4096, 4096
    ),
    "llama-3-8b": Model(
        "Llama-3-8B", "Meta-Llama-3-8B", 32, 4096, 32, 8, 128, 14336, 128256, 8.03e9, 8192, 8192
    ),
}
PROFILES = (("a100", "llama-2-7b"), ("h100", "llama-2-7b"), ("a100", "llama-3-8b"))
CALIB = {"n_q": 32, "n_kv": 4, "head_dim": 128}  # Llama-2-70B at TP2: per-GPU heads of attention.csv


def _median(row: dict, op: str) -> float:
    return float(row[f"time_stats.{op}.median"])


def _loglog(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(np.log(x), np.log(xs), np.log(ys)))


@dataclass
class LinearCurve:
    """Measured per-layer linear time (ms) against token count, duplicates averaged."""

    tokens: np.ndarray
    layer_ms: np.ndarray
    emb_ms: np.ndarray
    norm_ms: np.ndarray
    matmul_ms: np.ndarray

    @classmethod
    def read(cls, path: Path) -> LinearCurve:
        by_t: dict[int, list[dict]] = defaultdict(list)
        with path.open() as f:
            for row in csv.DictReader(f):
                if row["num_tensor_parallel_workers"] == "1":
                    by_t[int(row["num_tokens"])].append(row)
        ts = sorted(by_t)

        def col(fn) -> np.ndarray:
            return np.array([np.mean([fn(r) for r in by_t[t]]) for t in ts])

        return cls(
            np.array(ts, float),
            col(lambda r: sum(_median(r, o) for o in LAYER_OPS)),
            col(lambda r: _median(r, "emb")),
            col(lambda r: _median(r, "input_layernorm")),
            col(lambda r: sum(_median(r, o) for o in MATMUL_OPS)),
        )

    def at(self, t: float | np.ndarray, curve: np.ndarray | None = None) -> np.ndarray:
        return _loglog(
            np.maximum(np.asarray(t, float), 1.0), self.tokens, self.layer_ms if curve is None else curve
        )

    def loo_mape(self) -> float:
        """Leave-one-out error of the interpolation at the interior measured points."""
        errs = []
        for i in range(1, len(self.tokens) - 1):
            keep = np.arange(len(self.tokens)) != i
            est = _loglog(self.tokens[i : i + 1], self.tokens[keep], self.layer_ms[keep])[0]
            errs.append(abs(est - self.layer_ms[i]) / self.layer_ms[i])
        return float(np.mean(errs))


@dataclass
class AttnCalib:
    eff_c: float
    eff_m: float
    over_prefill_ms: float
    over_decode_ms: float
    mape_prefill: float
    mape_decode: float
    # Which variant fitted the calibration rows best: FLOPs over the full q x (c+q) rectangle (a
    # kernel that does not skip the masked half) or the causal half; roofline max() or a sum.
    rect: bool = True
    overlap: bool = False


def _roof_ms(flops, nbytes, gpu: Gpu, eff_c: float, eff_m: float, overlap: bool = True):
    tc, tm = flops / (gpu.peak_flops * eff_c), nbytes / (gpu.bandwidth * eff_m)
    return (np.maximum(tc, tm) if overlap else tc + tm) * 1e3


def attn_flops_bytes(q: np.ndarray, c: np.ndarray, n_q: int, n_kv: int, hd: int, rect: bool = False) -> tuple:
    """Per layer: QK^T and PV FLOPs (causal pairs, or the whole rectangle); K,V of c+q tokens read
    plus Q read and O written (bf16)."""
    flops = 4.0 * n_q * hd * (q * (c + q) if rect else q * c + q * (q + 1) / 2)
    nbytes = 2.0 * (2 * n_kv * hd * (c + q) + 2 * n_q * hd * q)
    return flops, nbytes


def calibrate_attention(path: Path, gpu: Gpu, rect: bool, overlap: bool) -> AttnCalib:
    pre, dec = [], []
    with path.open() as f:
        for r in csv.DictReader(f):
            extra = _median(r, "attn_input_reshape") + _median(r, "attn_output_reshape")
            if r["is_prefill"] == "True":
                pre.append(
                    (
                        int(r["prefill_chunk_size"]),
                        int(r["kv_cache_size"]),
                        _median(r, "attn_prefill") + extra,
                    )
                )
            else:
                dec.append((int(r["batch_size"]), int(r["kv_cache_size"]), _median(r, "attn_decode") + extra))
    pq, pc, py = (np.array(v, float) for v in zip(*pre, strict=True))
    db, dc, dy = (np.array(v, float) for v in zip(*dec, strict=True))
    pf, pb = attn_flops_bytes(pq, pc, CALIB["n_q"], CALIB["n_kv"], CALIB["head_dim"], rect)
    # Decode: b sequences of one query each reading dc cached tokens (+ the new one).
    df_, db_ = attn_flops_bytes(np.ones_like(db), dc, CALIB["n_q"], CALIB["n_kv"], CALIB["head_dim"], rect)
    df_, db_ = df_ * db, db_ * db
    effs, overs = np.geomspace(0.02, 1.0, 120), np.linspace(0.0, 0.04, 161)

    def grid(flops, nbytes, y, fixed: float, vary_compute: bool) -> tuple[float, float, float]:
        best = (math.inf, 0.0, 0.0)
        for e in effs:
            ec, em = (e, fixed) if vary_compute else (fixed, e)
            base = _roof_ms(flops, nbytes, gpu, ec, em, overlap)
            errs = (np.abs(base[None, :] + overs[:, None] - y[None, :]) / y[None, :]).mean(axis=1)
            k = int(np.argmin(errs))
            if errs[k] < best[0]:
                best = (float(errs[k]), float(e), float(overs[k]))
        return best

    eff_c = 0.5
    for _ in range(3):  # decode is bytes-bound and prefill FLOP-bound: a few alternations converge
        err_d, eff_m, over_d = grid(df_, db_, dy, eff_c, vary_compute=False)
        err_p, eff_c, over_p = grid(pf, pb, py, eff_m, vary_compute=True)
    return AttnCalib(eff_c, eff_m, over_p, over_d, err_p, err_d, rect, overlap)


def fit_cpu_overheads(path: Path) -> tuple[float, float]:
    """ms per iteration and per sequence: schedule + sampler + prepare inputs + process outputs.
    Ray's communication time is left out: a TP1 instance has no Ray workers."""
    xs, ys = [], []
    with path.open() as f:
        for r in csv.DictReader(f):
            xs.append(float(r["batch_size"]))
            ys.append(
                sum(
                    float(r[f"{k}_median"])
                    for k in ("schedule", "sampler_e2e", "prepare_inputs_e2e", "process_model_outputs")
                )
            )
    slope, icpt = np.polyfit(xs, ys, 1)
    return float(icpt), float(slope)


@dataclass
class IterationModel:
    """The 'measured-derived' time of one iteration, seconds."""

    gpu: Gpu
    model: Model
    linear: LinearCurve
    attn: AttnCalib
    cpu: tuple[float, float]
    lin_eff_m: float
    lin_eff_c: float

    @classmethod
    def build(
        cls, gpu: Gpu, model: Model, linear: LinearCurve, attn: AttnCalib, cpu: tuple
    ) -> IterationModel:
        m = model
        w_bytes = 2.0 * (
            m.hidden * (m.n_q + 2 * m.n_kv) * m.head_dim
            + m.n_q * m.head_dim * m.hidden
            + 3 * m.hidden * m.inter
        )
        eff_m = w_bytes / (gpu.bandwidth * linear.at(1, linear.matmul_ms)[()] * 1e-3)
        t_max = linear.tokens[-1]
        eff_c = (
            w_bytes * t_max / (gpu.peak_flops * linear.matmul_ms[-1] * 1e-3)
        )  # 2 FLOPs per weight (2 bytes)
        return cls(gpu, model, linear, attn, cpu, float(eff_m), float(eff_c))

    def lm_head_ms(self, rows: int) -> float:
        m = self.model
        return float(
            _roof_ms(
                2.0 * m.hidden * m.vocab * rows,
                2.0 * m.hidden * m.vocab,
                self.gpu,
                self.lin_eff_c,
                self.lin_eff_m,
            )
        )

    def linear_ms(self, tokens: int, rows: int) -> float:
        """Everything but attention: embedding, layers, final norm, LM head, CPU."""
        lin = self.linear
        return float(
            lin.at(tokens, lin.emb_ms)
            + self.model.num_layers * lin.at(tokens)
            + lin.at(tokens, lin.norm_ms)
            + self.lm_head_ms(rows)
            + self.cpu[0]
            + self.cpu[1] * rows
        )

    def seconds(self, chunks: list[tuple[int, int]]) -> float:
        m, a = self.model, self.attn
        tokens = sum(n for _, n in chunks)
        dec = np.array([c + 1 for c, n in chunks if n == 1 and c > 0], float)
        pre = [(n, c) for c, n in chunks if not (n == 1 and c > 0)]
        attn = 0.0
        if len(dec):
            f, b = attn_flops_bytes(np.ones_like(dec), dec - 1, m.n_q, m.n_kv, m.head_dim, a.rect)
            attn += (
                float(_roof_ms(f.sum(), b.sum(), self.gpu, a.eff_c, a.eff_m, a.overlap)) + a.over_decode_ms
            )
        if pre:
            q, c = (np.array(v, float) for v in zip(*pre, strict=True))
            f, b = attn_flops_bytes(q, c, m.n_q, m.n_kv, m.head_dim, a.rect)
            attn += (
                float(_roof_ms(f.sum(), b.sum(), self.gpu, a.eff_c, a.eff_m, a.overlap)) + a.over_prefill_ms
            )
        return (self.linear_ms(tokens, len(chunks)) + m.num_layers * attn) * 1e-3


def shape_of(chunks: list[tuple[int, int]]) -> BatchShape:
    """A synthetic batch as (num_computed, num_new) per sequence: here, where a batch has no
    requests, one new token after cached ones is a decode (its cost is a decode's)."""
    return BatchShape.of([(c, n) for c, n in chunks if not (n == 1 and c > 0)],
                         [c for c, n in chunks if n == 1 and c > 0])


def kv_capacity(gpu: Gpu, m: Model, max_num_seqs: int = 256) -> tuple[int, dict]:
    """vLLM's rule: 90% of the GPU, minus weights, peak activations of a max_model_len-token
    profiling pass (MLP gate/up/act + ~6 hidden-size buffers, bf16), fp32 logits of max_num_seqs rows,
    and 1 GiB for the CUDA context, cuBLAS workspace and CUDA graphs."""
    weights = m.params * 2
    act = (3 * m.inter + 6 * m.hidden) * 2 * m.max_model_len + max_num_seqs * m.vocab * 4
    free = 0.9 * gpu.memory - weights - act - 1 * GIB
    per_token = 2 * m.num_layers * m.n_kv * m.head_dim * 2
    blocks = int(free // (per_token * 16))
    return blocks, {
        "weights_gib": weights / GIB,
        "activation_gib": act / GIB,
        "kv_gib": free / GIB,
        "kv_bytes_per_token": per_token,
    }


def synthetic_batches(
    m: Model, capacity: int, n: int, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """Prefill-only chunks, decode-only batches and Sarathi-style hybrids (decodes + 1-2 chunks)."""
    L = m.max_model_len

    def contexts(b: int) -> list[int]:
        level = rng.uniform(16, L - 1)
        ctx = np.clip(rng.uniform(0.1, 1.9, b) * level, 2, L - 1).astype(int)
        if ctx.sum() > capacity:  # a real instance cannot hold more than its KV cache
            ctx = np.maximum(2, ctx * capacity // ctx.sum())
        return [(int(x) - 1, 1) for x in ctx]

    def chunk(q: int) -> tuple[int, int]:
        c = 0 if rng.random() < 0.4 or L - q <= 0 else int(rng.integers(0, L - q + 1))
        return (c, q)

    def logint(lo: int, hi: int) -> int:
        return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))

    budgets = [b for b in (256, 512, 1024, 2048, 4096, 8192) if b <= m.max_chunk]
    out = []
    for i in range(n):
        kind = i % 7
        if kind < 2:
            out.append([chunk(logint(1, min(m.max_chunk, L)))])
        elif kind < 4:
            out.append(contexts(logint(1, 256)))
        else:
            budget = int(rng.choice(budgets))
            dec = contexts(min(logint(1, 256), budget - 1))
            room = budget - len(dec)
            if rng.random() < 0.5 or room < 2:
                out.append(dec + [chunk(room)])
            else:
                q1 = int(rng.integers(1, room))
                out.append(dec + [chunk(q1), chunk(room - q1)])
    return out


def derive(data: Path, out: Path, n: int, seed: int) -> None:
    vidur = (data / "gpu_profiles" if (data / "gpu_profiles").is_dir() else data) / "vidur"
    calib_dir = vidur / "a100-llama-2-70b-tp2"
    variants = [
        calibrate_attention(calib_dir / "attention.csv", GPUS["a100"], rect, overlap)
        for rect in (False, True)
        for overlap in (True, False)
    ]
    for v in variants:
        print(
            f"attention variant flops={'rectangle' if v.rect else 'causal'} "
            f"{'max(compute, memory)' if v.overlap else 'compute + memory'}: eff_c={v.eff_c:.3f} "
            f"eff_m={v.eff_m:.3f} MAPE prefill {v.mape_prefill:.1%} decode {v.mape_decode:.1%}"
        )
    attn = min(variants, key=lambda v: v.mape_prefill + v.mape_decode)
    cpu = fit_cpu_overheads(calib_dir / "cpu_overheads.csv")
    print(
        f"attention calibration chosen (A100, Llama-2-70B TP2 rows): eff_c={attn.eff_c:.3f} "
        f"eff_m={attn.eff_m:.3f} "
        f"overhead prefill={attn.over_prefill_ms * 1e3:.1f}us decode={attn.over_decode_ms * 1e3:.1f}us; "
        f"MAPE prefill rows {attn.mape_prefill:.1%}, decode rows {attn.mape_decode:.1%}"
    )
    print(f"cpu overheads: {cpu[0]:.3f} ms per iteration + {cpu[1] * 1e3:.1f} us per sequence")
    rng = np.random.default_rng(seed)
    for gpu_key, model_key in PROFILES:
        gpu, m = GPUS[gpu_key], MODELS[model_key]
        lin = LinearCurve.read(vidur / gpu_key / m.vidur_dir / "mlp.csv")
        it = IterationModel.build(gpu, m, lin, attn, cpu)
        blocks, mem = kv_capacity(gpu, m)
        batches = synthetic_batches(m, blocks * 16, n, rng)
        secs = [it.seconds(b) for b in batches]
        name = f"{gpu_key}-{model_key}"
        pm = fit_perf_model(
            [shape_of(b) for b in batches],
            secs,
            heldout=0.2,
            seed=seed,
            name=name,
            hardware=f"{gpu.name}, TP1, bf16",
            model=m.name,
            notes={
                "source": "Derived from Vidur operator profiles (MIT licence, Microsoft): linear ops of "
                f"vidur/{gpu_key}/{m.vidur_dir}/mlp.csv (TP1 medians, log-log interpolated, "
                "residual add counted twice per layer); attention from the GPU roofline "
                "with efficiencies calibrated on Vidur's A100 Llama-2-70B TP2 attention.csv; "
                "LM head from the roofline; CPU overheads (schedule, sampler, prepare inputs, process "
                "outputs) from Vidur's A100 CodeLlama-34B TP2 cpu_overheads.csv. "
                "Fitted by scripts/derive_gpu_profiles.py; no raw data shipped.",
                "attention": {
                    "flops": "q*(c+q) rectangle" if attn.rect else "causal",
                    "roofline": "max" if attn.overlap else "sum",
                    "eff_compute": round(attn.eff_c, 4),
                    "eff_memory": round(attn.eff_m, 4),
                    "overhead_prefill_ms": attn.over_prefill_ms,
                    "overhead_decode_ms": attn.over_decode_ms,
                },
                "cpu_overhead_ms": {"per_iteration": round(cpu[0], 4), "per_seq": round(cpu[1], 5)},
                "lm_head_efficiency": {"memory": round(it.lin_eff_m, 3), "compute": round(it.lin_eff_c, 3)},
                "kv_memory": {k: round(v, 3) for k, v in mem.items()},
                "fit_points": len(batches),
                "seed": seed,
            },
        )
        capacity = KVCapacity(blocks, 16, m.max_model_len, mem["kv_bytes_per_token"])
        Profile(pm, capacity).save(out / f"{name}.json")
        in_range = [t for t in lin.tokens if t <= m.max_chunk]  # the fit saw batches up to max_chunk tokens
        pred = [pm.predict(BatchShape(num_tokens=int(t), num_seqs=1)) for t in in_range]
        print(
            f"\n## {name}: knees={pm.knees} coef={[f'{c:.3g}' for c in pm.coef]} kv_blocks={blocks} "
            f"(KV {mem['kv_gib']:.1f} GiB)"
        )
        print(
            f"fit MAPE {pm.fit_mape:.2%}, held-out MAPE {pm.heldout_mape:.2%} "
            f"({len(batches)} points, 20% held out)"
        )
        lin_err = mape(pred, [it.linear_ms(int(t), 1) * 1e-3 for t in in_range])
        print(
            f"linear part: interpolation leave-one-out MAPE on the raw per-layer rows {lin.loo_mape():.2%}; "
            f"fitted model at zero attention vs raw rows (+emb, norm, head, cpu) "
            f"{lin_err:.2%} over {len(in_range)} token counts"
        )
        print(
            f"isolated decode (1 seq, ctx 1024): {isolated_decode_time(pm) * 1e3:.2f} ms "
            f"(derived {it.seconds([(1023, 1)]) * 1e3:.2f}); isolated prefill 1024: "
            f"{isolated_prefill_time(pm, 1024) * 1e3:.2f} ms (derived {it.seconds([(0, 1024)]) * 1e3:.2f})"
        )
        rel = np.abs(np.array([pm.predict(shape_of(b)) for b in batches]) - secs) / secs
        print(f"relative error over all points: p95 {np.percentile(rel, 95):.1%}, max {rel.max():.1%}")
        kinds = {"prefill": [], "decode": [], "hybrid": []}
        for b, s in zip(batches, secs, strict=True):
            k = (
                "decode"
                if all(nn == 1 and c > 0 for c, nn in b)
                else ("prefill" if len(b) == 1 else "hybrid")
            )
            kinds[k].append((pm.predict(shape_of(b)), s))
        print(
            "MAPE by kind (all points): "
            + ", ".join(f"{k} {mape([p for p, _ in v], [s for _, s in v]):.2%}" for k, v in kinds.items())
        )


def compare_distserve(data: Path, out: Path) -> None:
    """Markdown table: our profiles vs DistServe's fitted vLLM latencies for OPT-13B TP1 on A100-80GB."""
    import json

    ds_dir = (data / "gpu_profiles" if (data / "gpu_profiles").is_dir() else data) / "distserve"
    fit = json.loads((ds_dir / "profiler-a100-80g.vllm.json").read_text())["facebook/opt-13b"]["1"]
    with (ds_dir / "max_num_tokens.csv").open() as f:
        cap = next(
            int(r["max_num_tokens"])
            for r in csv.DictReader(f)
            if r["model"] == "facebook/opt-13b" and r["tp"] == "1" and r["pp"] == "1"
        )

    def ds_decode(bs: int, ctx: int) -> float:
        a, b, c = fit[
            "decoding_smallbs" if bs < fit["decoding_large_small_bs_threshold"] else "decoding_largebs"
        ]
        return a + b * bs * ctx + c * bs

    lens, bss = (512, 1024, 2048), (1, 32, 128)
    print(
        "\n| profile | "
        + " | ".join(f"prefill {n} ms" for n in lens)
        + " | "
        + " | ".join(f"decode bs {b} @1024 ms" for b in bss)
        + " | KV tokens |"
    )
    print("|---" * (2 + len(lens) + len(bss)) + "|")
    for gpu_key, model_key in PROFILES:
        prof = load_profile(out / f"{gpu_key}-{model_key}.json")
        pm = prof.perf_model
        cells = [isolated_prefill_time(pm, n) * 1e3 for n in lens]
        cells += [pm.predict(BatchShape.of(decodes=[1023] * b)) * 1e3 for b in bss]
        kv_tokens = prof.capacity.num_kv_blocks * 16
        print(f"| {pm.name} | " + " | ".join(f"{v:.1f}" for v in cells) + f" | {kv_tokens} |")
    a, b, c = fit["prefill"]
    for label, scale in (
        ("DistServe vLLM OPT-13B A100 TP1", 1.0),
        ("  same x 6.74/12.85 (params)", 6.74 / 12.85),
    ):
        cells = [(a + b * n + c * n * n) * scale for n in lens] + [ds_decode(bs, 1024) * scale for bs in bss]
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in cells) + f" | {cap if scale == 1.0 else ''} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "ascendra" / "profiles"))
    ap.add_argument("--points", type=int, default=3500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    derive(Path(args.data), Path(args.out), args.points, args.seed)
    compare_distserve(Path(args.data), Path(args.out))


if __name__ == "__main__":
    main()
