"""`ascendra serve`'s start-up as a user sees it: the last line says where it listens, what it serves
and with which instances; health and metrics probes stay out of the access log unless asked for."""

from __future__ import annotations

import httpx
import pytest

from ascendra.server.launch import ServerProcess

pytestmark = pytest.mark.slow  # a live server (dummy weights: quick to start)

DUMMY = ["--model", "dummy:tiny", "--log-level", "info"]  # info: the level a user gets by default


def lines(server: ServerProcess) -> list[str]:
    return [line for line in server.output().splitlines() if line.strip()]


def test_the_last_line_of_start_up_is_the_address_model_and_roles():
    with ServerProcess([*DUMMY, "--instances", "3", "--hp-instances", "1"]) as srv:
        # ServerProcess returns once /health answers, which the access log leaves out: nothing since.
        assert lines(srv)[-1] == (f"ascendra serve: ready on http://127.0.0.1:{srv.port}, model dummy:tiny, "
                                  f"instances 2 LP + 1 HP")
        for path in ("/health", "/metrics", "/health?verbose=1", "/v1/models"):
            assert httpx.get(srv.url + path, timeout=10).status_code == 200
        srv.stop()
        log = srv.output()
    assert '"GET /v1/models HTTP/1.1" 200' in log
    assert "GET /health" not in log and "GET /metrics" not in log


def test_a_baseline_names_its_policy_and_probes_can_be_logged():
    with ServerProcess([*DUMMY, "--system", "sarathi", "--instances", "2", "--log-probes"]) as srv:
        assert any(line.endswith(f"http://127.0.0.1:{srv.port}, model dummy:tiny, instances 2 x sarathi")
                   for line in lines(srv))
        assert httpx.get(srv.url + "/metrics", timeout=10).status_code == 200
        srv.stop()
        assert '"GET /metrics HTTP/1.1" 200' in srv.output()
