"""Performance profiles on disk: the shipped catalogue, loading and saving.

A profile is a fitted `PerfModel` (how long an iteration takes on some hardware) together with the
`KVCapacity` an instance of that hardware and model has. Both travel in one flat JSON file per
(hardware, model); the GPU ones are derived by scripts/derive_gpu_profiles.py, the CPU one by
`ascendra profile`. This is where file I/O lives; `core` only predicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import PerfModel, feature_names

FOLDER = Path(__file__).resolve().parent


@dataclass
class Profile:
    perf_model: PerfModel
    capacity: KVCapacity

    def to_dict(self) -> dict:
        d = asdict(self.perf_model)
        d["features"] = feature_names(self.perf_model.knees)
        return d | asdict(self.capacity)

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        d = dict(d)
        names = d.pop("features", None)
        expected = feature_names(d.get("knees", []))
        if names is not None and list(names) != expected:
            raise ValueError(f"profile features {names} do not match this version's {expected}")
        cap = {f.name: d.pop(f.name) for f in fields(KVCapacity) if f.name in d}
        return cls(PerfModel(**d), KVCapacity(**cap))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def for_this_cpu(name: str, has_amx: bool | None = None) -> str:
    """A shipped CPU profile's variant for CPUs with AMX tiles (`cpu-` -> `cpu-amx-` in its name),
    where this CPU has them (`has_amx`, asked of torch if not given) and that variant is shipped.
    bf16 matmuls on AMX ran prompt chunks about 3x faster than a profile fitted without it says
    (docs/benchmarks.md section 10, "A new host"), so a profile fitted on one kind misjudges the other."""
    amx = name.replace("cpu-", "cpu-amx-", 1)
    if amx == name or amx not in shipped_profiles():
        return name
    if has_amx is None:
        import torch

        has_amx = torch.cpu._is_amx_tile_supported()
    return amx if has_amx else name


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def load_profile(path_or_name: str | Path) -> Profile:
    """A profile from a JSON path, or a shipped one by name."""
    p = Path(path_or_name)
    if not p.exists():
        p = FOLDER / f"{path_or_name}.json"
    if not p.exists():
        raise FileNotFoundError(
            f"no performance profile at {str(path_or_name)!r} (nor a shipped one by that name; "
            f"shipped: {', '.join(shipped_profiles())})"
        )
    return Profile.from_dict(json.loads(p.read_text()))
