"""Engines: the executors an instance runs (TorchExecutor here)."""
