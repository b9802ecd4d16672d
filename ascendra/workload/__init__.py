"""Workloads: arrival processes, fitted request-length distributions and trace readers."""

from ascendra.workload.arrivals import gamma_arrivals, make_arrivals, poisson_arrivals
from ascendra.workload.builder import fit_to_model_len, make_workload, to_requests
from ascendra.workload.item import WorkItem
from ascendra.workload.lengths import LengthModel, load_length_model, workload_names
from ascendra.workload.replay import mean_rate, replay
from ascendra.workload.traces import Trace, TraceFormatError, load_trace_items, read_trace, scale_arrivals

__all__ = [
    "LengthModel",
    "Trace",
    "TraceFormatError",
    "WorkItem",
    "fit_to_model_len",
    "gamma_arrivals",
    "load_length_model",
    "load_trace_items",
    "make_arrivals",
    "make_workload",
    "mean_rate",
    "poisson_arrivals",
    "read_trace",
    "replay",
    "scale_arrivals",
    "to_requests",
    "workload_names",
]
