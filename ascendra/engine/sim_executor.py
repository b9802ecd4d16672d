"""SimExecutor: runs nothing, and says how long the iteration would have taken."""

from __future__ import annotations

import math
import random

from ascendra.core.batch import ScheduledBatch
from ascendra.core.iteration_stats import IterationNoise
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request
from ascendra.engine.executor import ExecuteOutput, KVState


class SimExecutor:
    """The performance model's prediction for the batch the real scheduler chose.

    With `noise` (or, without it, where the profile has a `spread`) the prediction is scattered
    as live iterations are, seeded. A request meets its TBT SLO only if (nearly) every gap does,
    so one slow iteration can fail it: a simulator whose iterations all take exactly their
    prediction overstates TBT attainment. Its tokens are placeholders (`token_ids` None): a
    simulated request ends at its trace output length."""

    def __init__(
        self, perf_model: PerfModel, seed: int | str = 0, noise: IterationNoise | None = None
    ) -> None:
        self.perf_model = perf_model
        pm = perf_model
        self.noise = noise or IterationNoise.around_prediction(pm.spread, pm.spread_correlation)
        self._rng = random.Random(seed)
        self._z = 0.0  # the AR(1) state: a standard normal

    def execute(self, batch: ScheduledBatch) -> ExecuteOutput:
        return ExecuteOutput(None, None, None, self.duration(batch))

    def duration(self, batch: ScheduledBatch) -> float:
        # The scheduler predicted the batch with the same model when it chose it.
        seconds = batch.predicted or self.perf_model.predict(batch.shape)
        noise = self.noise
        if noise is None:
            return seconds
        rho = noise.correlation
        self._z = rho * self._z + math.sqrt(1.0 - rho * rho) * self._rng.gauss(0.0, 1.0)
        return seconds * math.exp(noise.log_ratio(seconds, self._z))

    def release(self, request_id: str) -> None:
        pass  # no per-request state

    def export_kv(self, request: Request) -> KVState | None:
        return None  # nothing to copy: the simulator charges the transfer's modelled time

    def import_kv(self, request: Request, state: KVState | None) -> None:
        pass
