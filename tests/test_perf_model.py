"""PerfModel: fitting, profiles on disk, chunk sizing, and the shipped GPU profiles."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ascendra.core.batch import BatchShape
from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import PerfModel, feature_names, isolated_decode_time, isolated_prefill_time
from ascendra.profiles import Profile, for_this_cpu, load_profile, shipped_profiles
from ascendra.profiles.fit import CPU_KNEES, fit_perf_model

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
TRUE = PerfModel(coef=[0.010, 2.0e-5, 3.0e-5, 5.0e-9, 3.0e-7, 4.0e-5], knees=[256])


def _random_batches(rng: np.random.Generator, n: int) -> list[BatchShape]:
    shapes = []
    for i in range(n):
        decodes = [int(c) - 1 for c in rng.integers(2, 4096, size=int(rng.integers(0, 200)))]
        chunks = []
        if i % 3 != 2 or not decodes:  # two thirds carry a prompt chunk, the rest are decode-only
            q = int(np.exp(rng.uniform(0, np.log(4096))))
            chunks.append((int(rng.integers(0, 2048)) if rng.random() < 0.5 else 0, q))
        shapes.append(BatchShape.of(chunks, decodes))
    return shapes


def test_fit_recovers_known_coefficients_and_knee_under_noise() -> None:
    rng = np.random.default_rng(1)
    shapes = _random_batches(rng, 1500)
    secs = [TRUE.predict(s) * (1 + rng.normal(0, 0.01)) for s in shapes]
    fitted = fit_perf_model(shapes, secs, heldout=0.2, seed=3)
    assert fitted.knees == TRUE.knees
    # num_seqs is nearly collinear with num_tokens for decodes, so its coefficient is the loosest.
    np.testing.assert_allclose(fitted.coef[:5], TRUE.coef[:5], rtol=0.05)
    np.testing.assert_allclose(fitted.coef[5], TRUE.coef[5], rtol=0.25)
    assert fitted.fit_mape < 0.012 and fitted.heldout_mape < 0.012
    fresh = _random_batches(np.random.default_rng(7), 200)
    errs = [abs(fitted.predict(s) - TRUE.predict(s)) / TRUE.predict(s) for s in fresh]
    assert max(errs) < 0.01


def test_fit_rejects_too_few_or_non_positive_points() -> None:
    shapes = _random_batches(np.random.default_rng(0), 20)
    with pytest.raises(ValueError, match="at least"):
        fit_perf_model(shapes[:3], [0.01] * 3)
    with pytest.raises(ValueError, match="positive"):
        fit_perf_model(shapes, [0.01] * 19 + [0.0])


def test_save_load_round_trip_predicts_the_same(tmp_path: Path) -> None:
    model = PerfModel(
        coef=list(TRUE.coef),
        knees=[512],
        name="x",
        hardware="hw",
        model="m",
        fit_mape=0.01,
        heldout_mape=0.02,
        notes={"source": "test"},
    )
    Profile(model, KVCapacity(num_kv_blocks=123)).save(tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert back.perf_model == model and back.capacity == KVCapacity(num_kv_blocks=123)
    shape = BatchShape.of([(0, 700)], decodes=[100, 900])
    assert back.perf_model.predict(shape) == model.predict(shape)


def test_profile_with_wrong_feature_names_is_rejected(tmp_path: Path) -> None:
    d = Profile(TRUE, KVCapacity()).to_dict()
    d["features"] = [f if f != "prefill_attn_work" else "prefill_flops" for f in feature_names([256])]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="prefill_flops.*do not match"):
        load_profile(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="1 knees needs 6 coefficients"):
        PerfModel(coef=[1.0, 2.0], knees=[64])
    with pytest.raises(ValueError, match="must not fall"):
        PerfModel(coef=[0.01, 1e-4, -2e-4, 0.0, 0.0, 0.0], knees=[64])


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match="a100-llama-3-8b"):
        load_profile("no-such-gpu-model")


@pytest.mark.parametrize("context", [0, 1500])
@pytest.mark.parametrize("limit", [0.025, 0.05, 0.2])
def test_max_prefill_tokens_is_the_largest_chunk_within_the_limit(context: int, limit: float) -> None:
    model = load_profile("a100-llama-3-8b").perf_model
    base = [1000 + 37 * i for i in range(24)]
    n = model.max_prefill_tokens(BatchShape.of(decodes=base), limit, context=context)
    assert n > 0
    assert model.predict(BatchShape.of([(context, n)], base)) <= limit
    assert model.predict(BatchShape.of([(context, n + 1)], base)) > limit


def test_max_prefill_tokens_is_zero_when_the_base_is_already_over() -> None:
    model = load_profile("a100-llama-2-7b").perf_model
    base = BatchShape.of(decodes=[2000] * 64)
    assert model.max_prefill_tokens(base, model.predict(base) * 0.9) == 0


def test_shipped_profiles_have_physically_sane_magnitudes() -> None:
    assert {"a100-llama-2-7b", "h100-llama-2-7b", "a100-llama-3-8b"} <= set(shipped_profiles())
    profiles = [load_profile(n) for n in ("a100-llama-2-7b", "h100-llama-2-7b", "a100-llama-3-8b")]
    a7, h7, a8 = (p.perf_model for p in profiles)
    assert 0.005 < isolated_decode_time(a8) < 0.040
    for model, cap in ((p.perf_model, p.capacity) for p in profiles):
        assert "Vidur" in model.notes["source"]
        assert model.heldout_mape is not None and model.heldout_mape < 0.05
        assert isolated_prefill_time(model, 2048) > 1.8 * isolated_prefill_time(model, 512)
        # Decoding is memory-bound: 64 sequences cost far less than 64 single decodes.
        batch = model.predict(BatchShape.of(decodes=[1023] * 64))
        assert isolated_decode_time(model) < batch < 16 * isolated_decode_time(model)
        assert cap.num_kv_blocks * cap.block_size >= 8 * cap.max_model_len
    assert isolated_decode_time(h7) < isolated_decode_time(a7)
    assert isolated_prefill_time(h7, 1024) < isolated_prefill_time(a7, 1024) / 2  # 3x the FLOP/s
    # Llama-3-8B: grouped KV heads (8 vs 32) hold 4x the tokens and make long decodes cheaper.
    assert profiles[2].capacity.num_kv_blocks > 3 * profiles[0].capacity.num_kv_blocks
    assert a8.predict(BatchShape.of(decodes=[3000] * 128)) < a7.predict(BatchShape.of(decodes=[3000] * 128))


@pytest.mark.skipif(not (DATA / "gpu_profiles" / "vidur").is_dir(), reason="needs ../shared/data")
def test_shipped_profiles_are_reproduced_by_the_derivation_script(tmp_path: Path) -> None:
    path = ROOT / "scripts" / "derive_gpu_profiles.py"
    spec = importlib.util.spec_from_file_location("derive_gpu_profiles", path)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses resolve their module through sys.modules
    try:
        spec.loader.exec_module(script)
    finally:
        del sys.modules[spec.name]
    script.derive(DATA, tmp_path, n=3500, seed=0)
    for name in ("a100-llama-2-7b", "h100-llama-2-7b", "a100-llama-3-8b"):
        fresh, shipped = load_profile(tmp_path / f"{name}.json"), load_profile(name)
        assert fresh.perf_model.knees == shipped.perf_model.knees and fresh.capacity == shipped.capacity
        np.testing.assert_allclose(fresh.perf_model.coef, shipped.perf_model.coef, rtol=1e-6)


def _with_chunk(base, n: int, ctx: int):
    from ascendra.core.batch import BatchShape

    return BatchShape(
        base.num_tokens + n,
        base.num_seqs + 1,
        base.num_prefill_tokens + n,
        base.num_decodes,
        base.prefill_attn_work + n * ctx + n * (n + 1) // 2,
        base.decode_context,
    )


def test_max_prefill_tokens_is_exact_across_the_knee():
    """The closed form agrees with a linear search on random batches, limits and contexts."""
    import random

    from ascendra.core.batch import BatchShape
    from ascendra.core.perf_model import PerfModel

    rng = random.Random(3)
    for i in range(300):
        knees = sorted(rng.sample([0, 2, 4, 16, 64, 384, 1536], rng.randint(0, 4)))
        slopes = [rng.uniform(0, 2e-4) for _ in range(len(knees) + 1)]
        m = PerfModel(
            coef=[
                rng.uniform(0.001, 0.02),
                slopes[0],
                *(b - a for a, b in zip(slopes, slopes[1:], strict=False)),  # rising or falling slopes
                rng.uniform(0, 1e-8),
                rng.uniform(0, 1e-7),
                rng.uniform(0, 1e-4),
            ],
            knees=knees,
        )
        base = BatchShape.of(decodes=[rng.randint(1, 4000) for _ in range(rng.randint(0, 64))])
        ctx, cap = rng.randint(0, 3000), rng.randint(1, 5000)
        limit = m.predict(base) + rng.uniform(-0.005, 0.2)
        fitting = [n for n in range(1, cap + 1) if m.predict(_with_chunk(base, n, ctx)) <= limit]
        assert m.max_prefill_tokens(base, limit, ctx, cap) == max(fitting, default=0), (i, knees)


def test_fit_with_cpu_knees_follows_a_blas_step_that_one_knee_cannot():
    """A CPU's BLAS makes 1-3 rows cost the same and 4 rows much more, then settles to a steady
    per-token cost: the multi-knee fit follows that within 1%, a single knee cannot."""
    def linear_layers(t: int) -> float:
        if t <= 3:
            return 0.066 + 0.004 * (t - 1)  # one to three rows: the same kernel, nearly flat
        return 0.116 + (0.004 * t if t <= 16 else 0.0023 * t + 0.03)

    rng = np.random.default_rng(0)
    shapes = [BatchShape.of(decodes=[int(rng.integers(16, 1024))] * b)
              for b in range(1, 33) for _ in range(3)]
    shapes += [BatchShape.of([(0, n)]) for n in (8, 16, 32, 64, 128, 256, 384, 512, 768, 1024)]
    secs = [linear_layers(s.num_tokens) + 2e-5 * s.decode_context for s in shapes]
    multi = fit_perf_model(shapes, secs, knees=CPU_KNEES, heldout=0.0)
    single = fit_perf_model(shapes, secs, heldout=0.0)
    assert multi.fit_mape < 0.01 < single.fit_mape
    for b in (1, 2, 3, 4, 8):
        shape = BatchShape.of(decodes=[255] * b)
        truth = linear_layers(b) + 2e-5 * shape.decode_context
        assert multi.predict(shape) == pytest.approx(truth, rel=0.03)


@pytest.mark.parametrize("name", ["cpu-smollm2", "vllm-cpu-smollm2"])
def test_a_cpu_with_amx_gets_the_amx_variant_of_a_shipped_cpu_profile(name: str) -> None:
    """Fitted without AMX, a CPU profile overestimated prompt chunks 2-6x on a CPU with it."""
    amx = for_this_cpu(name, has_amx=True)
    assert amx == name.replace("cpu-", "cpu-amx-") and amx in shipped_profiles()
    assert for_this_cpu(name, has_amx=False) == name
    chunk = BatchShape.of([(0, 512)])
    assert load_profile(amx).perf_model.predict(chunk) < load_profile(name).perf_model.predict(chunk) / 2


def test_a_profile_without_an_amx_variant_is_kept() -> None:
    assert for_this_cpu("a100-llama-3-8b", has_amx=True) == "a100-llama-3-8b"
