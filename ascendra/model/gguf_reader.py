"""A small GGUF parser: metadata as plain Python values, tensors as zero-copy numpy views of a memmap.

gguf.GGUFReader builds a numpy view for every element of every array (the vocabulary and merges are
~100k strings), which took 2-3 s of SmolLM2's load; reading them with struct takes a few ms.
Dequantization still uses `gguf.quants.dequantize`, which takes the raw views made here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_MAGIC = b"GGUF"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NP = {
    0: np.uint8,
    1: np.int8,
    2: np.uint16,
    3: np.int16,
    4: np.uint32,
    5: np.int32,
    6: np.float32,
    7: np.bool_,
    10: np.uint64,
    11: np.int64,
    12: np.float64,
}
_STRING, _ARRAY = 8, 9
_PLAIN = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
}


@dataclass
class GGUFTensor:
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order (slowest first) of the dequantized tensor
    data: np.ndarray  # raw view: elements for float types, bytes per row for quantized ones


@dataclass
class GGUFFile:
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]


class _Cursor:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError(f"{self.path} is truncated (header ends early)")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise ValueError(f"{self.path} is truncated (header ends early)")
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.take("<I"), self.take("<Q")
            if itype in _NP:  # numeric arrays in one go
                end = self.pos + count * np.dtype(_NP[itype]).itemsize
                if end > len(self.buf):
                    raise ValueError(f"{self.path} is truncated (header ends early)")
                arr = np.frombuffer(self.buf[self.pos : end], dtype=_NP[itype]).tolist()
                self.pos = end
                return arr
            return [self.value(itype) for _ in range(count)]
        if vtype not in _SCALARS:
            raise ValueError(f"{self.path}: unknown GGUF value type {vtype}")
        return self.take(_SCALARS[vtype])


def read_gguf(path: str | Path) -> GGUFFile:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(mm), path)
    if bytes(mm[:4]) != _MAGIC:
        raise ValueError(f"{path} is not a GGUF file (bad magic)")
    cur.pos = 4
    version = cur.take("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version} (need 2 or 3, little-endian)")
    n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
        infos.append((name, dims, cur.take("<I"), cur.take("<Q")))
    align = int(meta.get("general.alignment", 32))
    start = -(-cur.pos // align) * align
    tensors = []
    for name, dims, qtype, offset in infos:
        try:
            ttype = GGMLQuantizationType(qtype)
        except ValueError:
            raise ValueError(f"{path}: tensor {name!r} has unknown type {qtype}") from None
        block, type_size = GGML_QUANT_SIZES[ttype]
        shape = tuple(reversed(dims))
        row_bytes = dims[0] // block * type_size
        nbytes = row_bytes * int(np.prod(dims[1:], dtype=np.int64))
        lo = start + offset
        if lo + nbytes > mm.shape[0]:
            raise ValueError(f"{path} is truncated: tensor {name!r} ends past the end of the file")
        raw = mm[lo : lo + nbytes]
        if ttype.name in _PLAIN:  # plain float/int elements
            data = raw.view(_PLAIN[ttype.name]).reshape(shape)
        else:  # quantized (and BF16): bytes per row, as gguf.quants.dequantize expects
            data = raw.reshape(*shape[:-1], row_bytes)
        tensors.append(GGUFTensor(name, ttype, shape, data))
    return GGUFFile(meta, tensors)
