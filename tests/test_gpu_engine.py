"""benchmarks/gpu_engine.py runs end to end at a tiny shape on CPU (its GPU run is not done here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_engine_runs_every_part_on_cpu(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_engine.py"), "--device", "cpu", "--model",
         "dummy:tiny", "--dtype", "float32", "--repeats", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    parts = json.loads((tmp_path / "gpu_engine.json").read_text())["parts"]
    assert all(p["ok"] for p in parts.values()), {k: p.get("error") for k, p in parts.items()}
    table = parts["iterations"]["backends"]["cpu"]
    assert [r["batch"] for r in table][:2] == ["decode 1 @ 48", "decode 4 @ 48"] and len(table) == 5
    assert all(r["ms"] > 0 and r["roofline"]["ms"] > 0 for r in table)
    assert parts["logits"]["vs_reference"]["cpu"]["argmax_equal"]
    assert parts["logits"]["vs_reference"]["cpu"]["max_abs_diff"] < 1e-4
    assert all(v["output_tokens"] == int(k.split(" x ")[0]) * 6 for k, v in parts["offline"].items()
               if isinstance(v, dict))
    assert parts["hf_generate"]["output_tok_per_s"] > 0
