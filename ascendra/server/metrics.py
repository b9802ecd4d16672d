"""Prometheus metrics of one server: a registry per app, fed by the live cluster's hooks."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ascendra.core.iteration_stats import BAND_EDGES, band_label
from ascendra.engine.instance import RequestOutput
from ascendra.metrics.records import RequestRecord
from ascendra.runtime.live.messages import Snapshot
from ascendra.runtime.live.state import ClusterObserver, Tracked, WorkerState
from ascendra.server.departures import STAGES, Departures
from ascendra.server.iteration_histograms import IterationHistograms

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class ServerMetrics(ClusterObserver):
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.ttft = Histogram("ascendra_ttft_seconds", "Time to first token", registry=r,
                              buckets=LATENCY_BUCKETS)
        self.tbt = Histogram("ascendra_tbt_seconds", "Gaps between consecutive output tokens", registry=r,
                             buckets=LATENCY_BUCKETS)
        self.attained = Counter("ascendra_slo_attained", "Finished requests that met an SLO "
                                "(ttft, tbt, or both)", ["slo"], registry=r)
        self.finished = Counter("ascendra_requests_finished", "Requests by finish reason", ["finish_reason"],
                                registry=r)
        self.offloads = Counter("ascendra_offloads", "Requests moved from an LP to an HP instance",
                                registry=r)
        # An offload the LP instance refused: the request had started (or ended) by the time the steal
        # reached it. The simulator's steals are instant; live ones are a report and a message late.
        self.offloads_refused = Counter("ascendra_offloads_refused", "Offloads the LP instance refused "
                                        "(the request had started before the steal reached it)", registry=r)
        self.migrations = Counter("ascendra_migrations", "Running requests moved to another instance "
                                  "with their KV", registry=r)
        self.role_changes = Counter("ascendra_role_changes", "Instances that changed role (adaptive "
                                    "roles), by the role taken", ["role"], registry=r)
        self.reroutes = Counter("ascendra_reroutes", "Requests re-dispatched after their instance died",
                                registry=r)
        self.preemptions = Counter("ascendra_preemptions", "Preemptions (KV freed, recomputed later)",
                                   ["instance"], registry=r)
        labels = ["instance", "role"]
        self.waiting = Gauge("ascendra_instance_waiting", "Requests waiting on an instance", labels,
                             registry=r)
        self.running = Gauge("ascendra_instance_running", "Requests running on an instance", labels,
                             registry=r)
        self.kv_usage = Gauge("ascendra_kv_usage_ratio", "Share of an instance's KV blocks in use", labels,
                              registry=r)
        self.blocks_used = Gauge("ascendra_kv_blocks_used", "KV blocks in use on an instance", labels,
                                 registry=r)
        self.steps = Gauge("ascendra_instance_steps", "Iterations an instance has run", labels, registry=r)
        self.busy = Gauge("ascendra_instance_busy_seconds", "Seconds an instance spent in iterations",
                          labels, registry=r)
        self.predicted_busy = Gauge("ascendra_instance_predicted_busy_seconds", "The same iterations' "
                                    "duration as the performance model predicted it", labels, registry=r)
        self.gaps = Gauge("ascendra_instance_iteration_gap_seconds", "Seconds between iterations "
                          "while work was left (the serving loop's own cost)", labels, registry=r)
        self.num_gaps = Gauge("ascendra_instance_iteration_gaps", "Gaps counted in "
                              "ascendra_instance_iteration_gap_seconds", labels, registry=r)
        self.spread = Gauge("ascendra_instance_iteration_spread", "Standard deviation over iterations "
                            "of log(measured / predicted duration)", labels, registry=r)
        band = [*labels, "band"]
        self.log_ratio_count = Gauge("ascendra_instance_iteration_log_ratio_count", "Iterations by band "
                                     "of predicted duration (band: its upper edge in seconds)", band,
                                     registry=r)
        self.log_ratio_sum = Gauge("ascendra_instance_iteration_log_ratio_sum", "Sum of log(measured / "
                                   "predicted duration) over the band's iterations", band, registry=r)
        self.log_ratio_squares = Gauge("ascendra_instance_iteration_log_ratio_squares", "Sum of its "
                                       "squares", band, registry=r)
        self.histograms = IterationHistograms()
        r.register(self.histograms)
        self.spread_correlation = Gauge("ascendra_instance_iteration_spread_correlation", "Lag-1 "
                                        "autocorrelation of log(measured / predicted duration): how "
                                        "much slow iterations come in runs", labels, registry=r)
        self.alive = Gauge("ascendra_instance_alive", "1 while the instance serves", labels, registry=r)
        # Every gauge of an instance's state under its role, and those by band too: a role change
        # removes the instance's series under its old role from all of them.
        self._by_role = (self.waiting, self.running, self.kv_usage, self.blocks_used, self.steps, self.busy,
                         self.predicted_busy, self.gaps, self.num_gaps, self.spread,
                         self.spread_correlation, self.alive)
        self._by_role_and_band = (self.log_ratio_count, self.log_ratio_sum, self.log_ratio_squares)
        self.frames_rejected = Gauge("ascendra_worker_frames_rejected",
                                     "Frames on the worker socket dropped unread (bad signature or shape)",
                                     registry=r)
        self.restarts = Counter("ascendra_instance_restarts", "Times a dead instance was started again",
                                labels, registry=r)
        self.in_flight = Gauge("ascendra_requests_in_flight", "Requests accepted and not finished",
                               registry=r)
        self.refused = Counter("ascendra_requests_refused", "Requests answered with an error before they "
                               "reached an instance, by HTTP status (400 bad input, 401 no key, 404 no such "
                               "model, 413 too large, 415 not JSON, 429 at the admission limit, ...)",
                               ["status"], registry=r)
        # The cluster drops an aborted request without a final output, so requests_finished never
        # counts these: the server does, where it aborts them.
        self.cancelled = Counter("ascendra_requests_cancelled", "Requests aborted before they finished "
                                 "because their client went away", registry=r)
        self.clients_left = Counter("ascendra_clients_left", "Clients that closed their connection before "
                                    "their answer was done, by stage (headers, body, waiting, streaming)",
                                    ["stage"], registry=r)
        self.clients_timed_out = Counter("ascendra_clients_timed_out", "Clients dropped for sending their "
                                         "request too slowly, by stage (headers: --header-timeout, body: "
                                         "--body-timeout)", ["stage"], registry=r)
        for stage in STAGES:  # every stage shows from the start, at 0
            self.clients_left.labels(stage)
        for stage in STAGES[:2]:
            self.clients_timed_out.labels(stage)
        self.departures = Departures(self.clients_left, self.clients_timed_out)
        self.best_effort = Counter("ascendra_requests_best_effort", "Requests that asked for an SLO below "
                                   "what the server can honour and were served as if they had asked for "
                                   "the bound (--below-floor best-effort), by SLO (ttft, tbt)", ["slo"],
                                   registry=r)
        self.overhead = Histogram("ascendra_server_overhead_seconds", "Server overhead: dispatch (HTTP "
                                  "arrival to worker receipt) and stream (token produced to SSE chunk sent)",
                                  ["stage"], registry=r, buckets=OVERHEAD_BUCKETS)
        self._preempt_seen: dict[int, int] = {}
        # Raw samples for benchmarks/server_overhead.py, bounded.
        self.stream_latency: deque[float] = deque(maxlen=100_000)

    # ---- ClusterObserver ---------------------------------------------------------------------

    def on_report(self, worker: WorkerState, snap: Snapshot) -> None:
        lab = (str(worker.index), worker.role)
        self.waiting.labels(*lab).set(len(snap.waiting))
        self.running.labels(*lab).set(snap.num_running)
        self.kv_usage.labels(*lab).set(snap.blocks_used / max(1, snap.num_blocks))
        self.blocks_used.labels(*lab).set(snap.blocks_used)
        self.alive.labels(*lab).set(1)
        self.steps.labels(*lab).set(snap.num_steps)
        it = snap.iterations
        self.busy.labels(*lab).set(it.busy_time)
        self.predicted_busy.labels(*lab).set(it.predicted_busy_time)
        self.gaps.labels(*lab).set(it.gap_time)
        self.num_gaps.labels(*lab).set(it.num_gaps)
        self.spread.labels(*lab).set(it.spread)
        self.spread_correlation.labels(*lab).set(it.spread_correlation)
        self.histograms.update(worker.index, worker.role, it)
        for b, m in enumerate(it.bands):
            if m.n:
                self.log_ratio_count.labels(*lab, band_label(b)).set(m.n)
                self.log_ratio_sum.labels(*lab, band_label(b)).set(m.total)
                self.log_ratio_squares.labels(*lab, band_label(b)).set(m.squares)
        seen = self._preempt_seen.get(worker.index, 0)
        if snap.num_preemptions > seen:
            self.preemptions.labels(str(worker.index)).inc(snap.num_preemptions - seen)
            self._preempt_seen[worker.index] = snap.num_preemptions

    def on_dead(self, worker: WorkerState) -> None:
        lab = (str(worker.index), worker.role)
        for g in (self.waiting, self.running, self.kv_usage, self.blocks_used, self.alive):
            g.labels(*lab).set(0)

    def on_restart(self, worker: WorkerState) -> None:
        self.restarts.labels(str(worker.index), worker.role).inc()

    def on_finished(self, tracked: Tracked, output: RequestOutput) -> None:
        reason = output.finish_reason or "unknown"
        self.finished.labels(reason).inc()
        req = tracked.request
        times = req.token_times
        if times:
            self.ttft.observe(times[0] - req.arrival_time)
            for a, b in zip(times, times[1:], strict=False):
                self.tbt.observe(b - a)
        rec = RequestRecord(req.arrival_time, times, req.slo.ttft, req.slo.tbt, req.prompt_len,
                            ok=reason in ("stop", "length"), tbt_mean=req.slo.tbt_mean)
        for name, met in (("ttft", rec.meets_ttft), ("tbt", rec.meets_tbt), ("both", rec.meets_both)):
            if met:
                self.attained.labels(name).inc()

    def on_refused(self, status: int) -> None:
        self.refused.labels(str(status)).inc()

    def on_offload(self) -> None:
        self.offloads.inc()

    def on_offload_refused(self) -> None:
        self.offloads_refused.inc()

    def on_migration(self) -> None:
        self.migrations.inc()

    def on_reroute(self) -> None:
        self.reroutes.inc()

    def on_role_change(self, worker: WorkerState, old_role: str) -> None:
        """The instance's series go on under its new role: those under the old one are removed, or
        they would stay at their last values beside the new ones (and sums over an instance's series
        would count it twice)."""
        self.role_changes.labels(worker.role).inc()
        old = (str(worker.index), old_role)
        for g in self._by_role:
            _remove(g, old)
        for g in self._by_role_and_band:
            for b in range(len(BAND_EDGES) + 1):
                _remove(g, (*old, band_label(b)))

    def on_dispatch_latency(self, seconds: float) -> None:
        self.overhead.labels("dispatch").observe(seconds)

    def on_stream_latency(self, seconds: float) -> None:
        self.overhead.labels("stream").observe(seconds)
        self.stream_latency.append(seconds)


def _remove(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass  # never set under those labels
