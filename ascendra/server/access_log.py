"""Keep health and metrics probes out of uvicorn's access log.

A load balancer or orchestrator polls /health every few seconds and Prometheus scrapes /metrics;
logged, those lines bury the requests worth reading. `ascendra serve --log-probes` keeps them.
"""

from __future__ import annotations

import logging

# The probe routes: left out of the access log, and open without the API key (server.app).
PROBE_PATHS = frozenset({"/health", "/metrics"})


class ProbeFilter(logging.Filter):
    """Drops uvicorn's access records of PROBE_PATHS; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record args: (client address, method, path with query, HTTP version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            return args[2].split("?", 1)[0] not in PROBE_PATHS
        return True


def keep_probes_out(logger_name: str = "uvicorn.access") -> None:
    """Install the filter on uvicorn's access logger (after uvicorn has configured its logging)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, ProbeFilter) for f in logger.filters):
        logger.addFilter(ProbeFilter())
