"""What moving a request's KV between instances costs: a bandwidth model (issue 18).

A migrated request stops producing tokens from the moment its source hands it over until its KV
has landed at its target: `seconds(tokens)` = a fixed latency plus the KV bytes over the link's
bandwidth. The simulator charges exactly this; the router moves a request only when its projection
still pays after it. Plain data: the live path measures its own figures (docs/benchmarks.md §12).

Link figures, per direction, with their sources (what a 2-instance pair on one node would use):
- PCIe 4.0 x16: 32 GB/s signalling (PCI-SIG, PCIe 4.0 base spec, 16 GT/s x 16 lanes, 128b/130b);
  about 25 GB/s of it reaches a device-to-device copy, which is what `PCIE4` assumes.
- NVLink 3 on an A100 SXM4: 600 GB/s total, 300 GB/s per direction (NVIDIA A100 datasheet);
  `NVLINK3` assumes 250 GB/s reached.
The latency covers the handshake and the block-table bookkeeping at both ends (a guess of 1 ms on
GPUs, stated as one). `cpu-loopback` is measured: our live path between two worker processes on
this machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KVTransfer:
    bytes_per_token: int  # KV bytes of one token over all layers (ModelConfig.kv_bytes_per_token)
    bandwidth: float  # bytes per second
    latency: float = 1e-3  # seconds per move, whatever its size

    def __post_init__(self) -> None:
        if self.bytes_per_token < 0 or not self.bandwidth > 0 or self.latency < 0:
            raise ValueError(f"a KV transfer needs bytes >= 0, bandwidth > 0, latency >= 0: {self}")

    def seconds(self, num_tokens: int) -> float:
        """How long the KV of `num_tokens` computed tokens takes to move."""
        return self.latency + num_tokens * self.bytes_per_token / self.bandwidth

    @classmethod
    def link(cls, name: str, bytes_per_token: int) -> KVTransfer:
        """A named link (`LINKS`) for a model whose tokens take `bytes_per_token`."""
        try:
            bandwidth, latency = LINKS[name]
        except KeyError:
            raise ValueError(f"unknown KV link {name!r}; choose one of {', '.join(LINKS)}") from None
        return cls(bytes_per_token, bandwidth, latency)


# name -> (bytes per second, seconds per move); see the module doc for the sources.
LINKS: dict[str, tuple[float, float]] = {
    "pcie4": (25e9, 1e-3),
    "nvlink3": (250e9, 1e-3),
    # Our live path on this CPU: copy out, signed msgpack, zmq IPC through the server, copy in
    # (benchmarks/kv_migration.py; docs/benchmarks.md section 12).
    "cpu-loopback": (120e6, 5e-3),
}
