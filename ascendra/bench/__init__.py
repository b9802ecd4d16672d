"""Load generation for OpenAI-compatible servers: exact-length prompts, open-loop streaming client, report."""

from ascendra.bench.client import BenchRequest, ClientOptions, RequestResult, request_body, send_request
from ascendra.bench.prompts import PromptBuilder, load_tokenizer, make_prompt_builder
from ascendra.bench.report import BenchReport, compare_table, summary_row, to_record
from ascendra.bench.runner import RunOptions, build_requests, run_bench, run_requests

__all__ = [
    "BenchReport",
    "BenchRequest",
    "ClientOptions",
    "PromptBuilder",
    "RequestResult",
    "RunOptions",
    "build_requests",
    "compare_table",
    "load_tokenizer",
    "make_prompt_builder",
    "request_body",
    "run_bench",
    "run_requests",
    "send_request",
    "summary_row",
    "to_record",
]
