"""Tokenizer: encode/decode, streaming detokenization, chat template (tokenizer files or GGUF)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

# llama.cpp's pre-tokenizer names for byte-level BPE vocabularies we can rebuild exactly.
_GGUF_PRE = {
    # SmolLM splits every digit on its own, then applies the GPT-2 regex (as its tokenizer.json does).
    "smollm": lambda: pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    ),
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "default": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
}
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4
_LONG_TEXT = 20_000  # characters (~5 ms to encode); shorter texts take the cheaper call
_EOS_NAMES = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>")


class Tokenizer:
    def __init__(
        self,
        backend: Backend,
        chat_template: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        self.backend = backend
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token = eos_token
        eos = set(eos_token_ids)
        if eos_token is not None and backend.token_to_id(eos_token) is not None:
            eos.add(backend.token_to_id(eos_token))
        self.eos_token_ids: frozenset[int] = frozenset(eos)
        self._template: Any = None
        self._longest_token: int | None = None  # bytes; 0: unknown (see min_tokens)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if len(text) > _LONG_TEXT:
            # `encode` holds the GIL throughout (2 s for 2 MB), stalling every other thread, the
            # server's event loop included; `encode_batch` releases it and gives the same ids.
            return self.backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def min_tokens(self, text: str) -> int:
        """A lower bound on len(encode(text)), found without encoding it (0 where none is known).

        With a lossless byte-level vocabulary each token stands for a run of the text's bytes, so a
        text of n bytes has at least n / (the longest token's bytes) tokens. A server can then refuse
        a megabyte prompt for an 8k context at once, rather than tokenize it for seconds."""
        if self._longest_token is None:
            self._longest_token = self._longest_token_bytes()
        return -(-len(text.encode("utf-8")) // self._longest_token) if self._longest_token else 0

    def _longest_token_bytes(self) -> int:
        b = self.backend
        # A normalizer may shorten the text first, and an added token that strips the whitespace
        # beside it stands for more than its own bytes: then there is no such bound.
        stripping = any(t.lstrip or t.rstrip for t in b.get_added_tokens_decoder().values())
        if b.normalizer is not None or "ByteLevel" not in repr(b.decoder) or stripping:
            return 0
        pieces = b.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
        # A token that ends inside a character decodes to U+FFFD: 3 bytes for 1, still an upper bound.
        return max(len(p.encode("utf-8")) for p in pieces)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render the model's chat template (jinja2, as transformers does) into a prompt string."""
        if not self.chat_template:
            raise ValueError("this model has no chat template; send a plain prompt instead")
        if self._template is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise ValueError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
            )
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        # The template writes any BOS itself, so the post-processor must not add another.
        return self.encode(
            self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False
        )

    def detokenizer(
        self, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
    ) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self, prompt_ids, skip_special_tokens)

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_hf_folder(cls, folder: str | Path, eos_token_ids: Sequence[int] = ()) -> Tokenizer:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:
            raise ValueError(f"cannot read {path}: {e}") from None
        cfg: dict[str, Any] = {}
        if (folder / "tokenizer_config.json").is_file():
            cfg = json.loads((folder / "tokenizer_config.json").read_text())
        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        return cls(
            backend,
            template,
            _token_str(cfg.get("bos_token")),
            _token_str(cfg.get("eos_token")),
            eos_token_ids,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer llama.cpp describes in a GGUF's `tokenizer.ggml.*` keys."""
        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
        if kind != "gpt2" or pre not in _GGUF_PRE:
            raise ValueError(
                f"unsupported GGUF tokenizer (model {kind!r}, pre {pre!r}); supported: gpt2 BPE "
                f"with pre-tokenizer {', '.join(_GGUF_PRE)}"
            )
        vocab = {tok: i for i, tok in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        backend.pre_tokenizer = _GGUF_PRE[pre]()
        backend.decoder = decoders.ByteLevel()
        types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        backend.add_special_tokens(
            [
                AddedToken(t, special=True, normalized=False)
                for t, ty in zip(tokens, types, strict=True)
                if ty == _TOKEN_CONTROL
            ]
        )
        backend.add_tokens(
            [
                AddedToken(t, special=False, normalized=False)
                for t, ty in zip(tokens, types, strict=True)
                if ty == _TOKEN_USER_DEFINED
            ]
        )
        bos_id, eos_id = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
        bos = tokens[bos_id] if bos_id is not None else None
        if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            )
        eos_ids = {eos_id} if eos_id is not None else set()
        # Chat models end a turn with a control token that is often not the file's eos id.
        eos_ids |= {vocab[n] for n in _EOS_NAMES if n in vocab and types[vocab[n]] == _TOKEN_CONTROL}
        return cls(
            backend,
            meta.get("tokenizer.chat_template"),
            bos,
            tokens[eos_id] if eos_id is not None else None,
            sorted(eos_ids),
        )


def _token_str(tok: Any) -> str | None:
    return tok.get("content") if isinstance(tok, dict) else tok


class IncrementalDetokenizer:
    """Text deltas for a stream of token ids.

    A byte-level token can end inside a multi-byte UTF-8 character, and sentencepiece decodes a token
    differently at the start of a text. So each step decodes a short window that starts a few tokens
    back, and holds a delta back while it ends in an incomplete character (U+FFFD).
    """

    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
    ):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-6:])
        self._prefix = 0
        self._read = len(self._ids)
        self.text = ""

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read], self._skip)
        new_text = self._tok.decode(self._ids[self._prefix :], self._skip)
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Whatever is held back at the end of the stream (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read], self._skip)
        new_text = self._tok.decode(self._ids[self._prefix :], self._skip)
        delta = new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
        self._prefix = self._read = len(self._ids)
        self.text += delta
        return delta
