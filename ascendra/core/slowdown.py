"""How much slower than the performance model an instance's iterations run, as it learns it.

Two figures, one rule each, read by our engine's scheduler and by the vLLM plugin alike: the mean
(`learnt_slowdown`), which the router's projected sums of iterations need, and the typical
iteration's (`learnt_step_slowdown`), which budgets are sized by.
"""

from __future__ import annotations

import math

SLOWDOWN_GAIN = 0.2  # weight of the newest iteration in the slowdown average
SLOWDOWN_RANGE = (0.2, 10.0)  # one wild measurement (a descheduled process) moves it only so far
STEP_SLOWDOWN_STEP = 0.25  # most one iteration moves the typical slowdown's log, before the gain


def learnt_slowdown(slowdown: float, elapsed: float, predicted: float) -> float:
    """The slowdown after an iteration predicted at `predicted` seconds took `elapsed`: the one
    rule, for our engine's scheduler and for the vLLM plugin alike."""
    return slowdown + SLOWDOWN_GAIN * (_ratio(elapsed, predicted) - slowdown)


def learnt_step_slowdown(step_slowdown: float, elapsed: float, predicted: float) -> float:
    """The typical iteration's slowdown after one more: each iteration moves its log by at most
    STEP_SLOWDOWN_STEP (times the gain), so it follows the median iteration, not the mean. Why two:
    on a busy host a 30 ms decode now and then takes 1 s (the process was descheduled), which no
    budget prevents; the mean counts those, as the router's projected sums of iterations must,
    but a budget sized by it shrinks every chunk for them. Live on vLLM engines the median
    iteration ran 0.87-0.94x the profile while the mean ran up to 1.85x, and chunks sized at a
    learnt slowdown over 1.5 carried a third of the tokens of those under 1.2."""
    x = math.log(_ratio(elapsed, predicted))
    s = math.log(step_slowdown)
    return math.exp(s + SLOWDOWN_GAIN * min(STEP_SLOWDOWN_STEP, max(-STEP_SLOWDOWN_STEP, x - s)))


def _ratio(elapsed: float, predicted: float) -> float:
    """Measured over predicted, within SLOWDOWN_RANGE: what both slowdowns learn from."""
    lo, hi = SLOWDOWN_RANGE
    return min(hi, max(lo, elapsed / predicted))
