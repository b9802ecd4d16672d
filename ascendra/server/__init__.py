"""OpenAI-compatible HTTP server over the live runtime."""
