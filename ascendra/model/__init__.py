"""Llama-family model, paged KV cache, loaders, tokenizer and sampler."""
