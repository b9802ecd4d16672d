"""Offline use: `LLM(...).generate(prompts, params)` runs a batch to completion on one instance.

The same Instance loop as the server (schedule -> execute -> update), driven here until every
request is done; any of the four policies can schedule it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ascendra.core.config import KVCapacity
from ascendra.core.request import SLO, Request
from ascendra.core.scheduler import SchedulerConfig
from ascendra.engine.factory import InstanceSpec, build_instance, load_model_info
from ascendra.model.sampling import SamplingParams

# Offline requests have no latency objectives: a TTFT/TBT that can never be missed.
NO_SLO = SLO(ttft=math.inf, tbt=math.inf)


@dataclass
class CompletionOutput:
    prompt: str | list[int]
    text: str
    token_ids: list[int]
    finish_reason: str | None
    num_prompt_tokens: int
    logprobs: list[float] = field(default_factory=list)


def build_request(
    request_id: str,
    prompt_ids: list[int],
    params: SamplingParams,
    eos_token_ids: frozenset[int],
    capacity: KVCapacity,
    slo: SLO = NO_SLO,
    arrival_time: float = 0.0,
) -> Request:
    """A Request for the engine from token ids and sampling parameters, with the checks a user
    should hear about in plain words rather than from deep inside torch."""
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    rejected = capacity.admission_error(len(prompt_ids), params.max_tokens)
    if rejected is not None:
        raise ValueError(rejected.message)
    return Request(
        request_id,
        arrival_time,
        len(prompt_ids),
        params.max_tokens,
        slo,
        prompt_token_ids=list(prompt_ids),
        stop_token_ids=params.stop_ids(eos_token_ids),
        params=params,
    )


class LLM:
    """An offline engine: `model` is "default" (SmolLM2), a HF folder, a .gguf file or "dummy:<shape>"."""

    def __init__(
        self,
        model: str = "default",
        *,
        dtype: str = "float32",
        policy: str = "sarathi",
        token_budget: int = 2048,
        max_num_seqs: int = 256,
        num_blocks: int | None = None,
        kv_cache_memory: int | str = "256MiB",
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        import torch

        self.info = load_model_info(model)
        if self.info.tokenizer is None:
            raise ValueError(f"{model!r} has no tokenizer: give token ids as prompts")
        self.tokenizer = self.info.tokenizer
        spec = InstanceSpec(
            model=model,
            dtype=dtype,
            device=device,
            num_blocks=num_blocks,
            kv_cache_memory=kv_cache_memory,
            policy=policy,
            scheduler=SchedulerConfig(max_num_batched_tokens=token_budget, max_num_seqs=max_num_seqs),
            threads=threads or torch.get_num_threads(),
        )
        self.instance = build_instance(spec)
        bm = self.instance.scheduler.block_manager
        self.capacity = KVCapacity(bm.num_blocks, bm.block_size, self.info.max_model_len)
        self._next_id = 0

    def generate(
        self,
        prompts: str | list[str] | list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
        *,
        use_chat_template: bool = False,
    ) -> list[CompletionOutput]:
        """Complete every prompt (text, or token ids); outputs come back in the prompts' order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        if not prompts:
            raise ValueError("no prompts given")
        if params is None:
            params = SamplingParams()
        plist = params if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} sampling params for {len(prompts)} prompts")
        requests = []
        for prompt, p in zip(prompts, plist, strict=True):
            ids = self._encode(prompt, use_chat_template)
            requests.append(
                build_request(
                    f"offline-{self._next_id}",
                    ids,
                    p,
                    self.tokenizer.eos_token_ids,
                    self.capacity,
                )
            )
            self._next_id += 1
        outs = {
            r.request_id: CompletionOutput(pr, "", [], None, r.prompt_len)
            for r, pr in zip(requests, prompts, strict=True)
        }
        for r in requests:
            self.instance.add_request(r)
        while self.instance.has_unfinished():
            for o in self.instance.step(time.monotonic):
                c = outs[o.request_id]
                c.token_ids += o.new_token_ids
                c.text += o.text
                c.logprobs += o.logprobs
                if o.finished:
                    c.finish_reason = o.finish_reason
        return [outs[r.request_id] for r in requests]

    def _encode(self, prompt: str | list[int], chat: bool) -> list[int]:
        if isinstance(prompt, list):
            if not all(isinstance(t, int) and 0 <= t < self.tokenizer.vocab_size for t in prompt):
                raise ValueError("token-id prompts must be integers within the vocabulary")
            return prompt
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("the prompt is empty")
        if chat:
            return self.tokenizer.encode_chat([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)
