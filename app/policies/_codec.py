"""JSON-able encodings of numpy arrays and generator states, for snapshots.

Arrays travel as base64 of their raw little-endian bytes (exact, and a third
smaller than the bytes themselves would be as JSON numbers are not);
128-bit generator words as decimal text, as :meth:`Policy.snapshot` does.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    return {
        "dtype": dtype.str,
        "shape": list(a.shape),
        "b64": base64.b64encode(a.astype(dtype, copy=False).tobytes()).decode("ascii"),
    }


def decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["b64"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def encode_generator(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise ValueError(f"only PCG64 generators are encoded, not {st['bit_generator']}")
    return {k: str(v) for k, v in st["state"].items()} | {
        "has_uint32": st["has_uint32"],
        "uinteger": st["uinteger"],
    }


def decode_generator(d: dict[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(d["state"]), "inc": int(d["inc"])},
        "has_uint32": d["has_uint32"],
        "uinteger": d["uinteger"],
    }
    return rng
