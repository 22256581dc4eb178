#!/usr/bin/env python3
"""Generate the GGUF reader's test fixtures with an independent implementation: the `gguf`
Python package (the reference reader/writer maintained in llama.cpp).

Writes, under compiler/tests/fixtures/gguf/:
  dequant/<TYPE>.raw  raw ggml block bytes (a few blocks)
  dequant/<TYPE>.f32  what gguf.quants.dequantize makes of them (little-endian f32)
  pywriter.gguf.bin   a small GGUF written by gguf.GGUFWriter (every metadata type, a few tensors,
                      general.alignment = 64), so the Rust reader is checked against another writer

Deterministic (fixed seeds); rerun with `pip install gguf numpy && python3 scripts/gen-dequant-fixtures.py`.
The Rust tests read only these files: they need no Python.

Types whose quantizer gguf-py implements (BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) get blocks quantized
from deterministic data of many magnitudes (normal, tiny, f16-subnormal scales, large, zeros,
constants, single spikes) plus random raw blocks; the k-quants (no Python quantizer) get random raw
blocks with sane f16 scales, plus a few extreme scales. F16 gets random bit patterns, including
infinities, NaNs and subnormals.
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compiler", "tests", "fixtures", "gguf")
DEQ = os.path.join(ROOT, "dequant")


def write(name: str, raw: bytes, expected: np.ndarray) -> None:
    expected = np.ascontiguousarray(expected, dtype="<f4").reshape(-1)
    with open(os.path.join(DEQ, name + ".raw"), "wb") as f:
        f.write(raw)
    with open(os.path.join(DEQ, name + ".f32"), "wb") as f:
        f.write(expected.tobytes())
    print(f"{name}: {len(raw)} raw bytes -> {expected.size} f32")


def dequant(raw: bytes, qtype: T) -> np.ndarray:
    return gguf.quants.dequantize(np.frombuffer(raw, dtype=np.uint8).copy(), qtype).reshape(-1)


def test_data(rng: np.random.Generator, block: int, n_blocks: int) -> np.ndarray:
    """Rows of blocks of very different magnitudes."""
    kinds = [
        lambda: rng.standard_normal(block),
        lambda: rng.standard_normal(block) * 1e-3,
        lambda: rng.standard_normal(block) * 1e-6,  # f16-subnormal scales
        lambda: rng.standard_normal(block) * 3e3,  # large, scale still finite in f16
        lambda: np.zeros(block),
        lambda: np.full(block, 0.75),
        lambda: np.where(np.arange(block) == 5, -100.0, 0.01),  # one spike
        lambda: rng.uniform(0.0, 1.0, block),  # all positive (min/offset types)
        lambda: rng.uniform(-1.0, 0.0, block) - 5.0,  # all negative
    ]
    rows = [kinds[i % len(kinds)]() for i in range(n_blocks)]
    return np.concatenate(rows).astype(np.float32)


def random_f16(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    sign = rng.choice([-1.0, 1.0], n)
    return (mag * sign).astype(np.float16)


def raw_blocks(rng: np.random.Generator, qtype: T, n_blocks: int, f16_fields: list) -> bytes:
    """Random block bytes with the f16 fields at byte offsets `f16_fields` set to sane scales
    (and, in the last block, extreme ones: the largest finite f16 and an f16 subnormal)."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in f16_fields:
        scales = random_f16(rng, n_blocks, 1e-4, 4.0)
        if n_blocks > 1:
            scales[-1] = np.float16(65504.0) if off == f16_fields[0] else np.float16(-6e-8)
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.tobytes()


def legacy(rng, qtype, f16_fields, n_quant=18, n_raw=6):
    block, _ = GGML_QUANT_SIZES[qtype]
    data = test_data(rng, block, n_quant)
    q = gguf.quants.quantize(data, qtype).tobytes()
    raw = q + raw_blocks(rng, qtype, n_raw, f16_fields)
    write(qtype.name, raw, dequant(raw, qtype))


def main() -> int:
    os.makedirs(DEQ, exist_ok=True)
    rng = np.random.default_rng(20240611)

    # F32: a copy, but check the byte order and special values go through untouched.
    f = np.concatenate([rng.standard_normal(120).astype(np.float32),
                        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -1e-45, 1.17e-38, 1.0], dtype=np.float32)])
    write("F32", f.tobytes(), dequant(f.tobytes(), T.F32))

    # F16: random bit patterns cover normals, subnormals, infinities and NaNs.
    bits = rng.integers(0, 1 << 16, size=256, dtype=np.uint16)
    bits[:6] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x7BFF]
    write("F16", bits.astype("<u2").tobytes(), dequant(bits.astype("<u2").tobytes(), T.F16))

    # BF16: quantized (rounded) from f32 data, plus random bit patterns.
    data = test_data(rng, 32, 6)
    q = gguf.quants.quantize(data, T.BF16).tobytes()
    raw = q + rng.integers(0, 1 << 16, size=64, dtype=np.uint16).astype("<u2").tobytes()
    write("BF16", raw, dequant(raw, T.BF16))

    legacy(rng, T.Q4_0, [0])
    legacy(rng, T.Q4_1, [0, 2])
    legacy(rng, T.Q5_0, [0])
    legacy(rng, T.Q5_1, [0, 2])
    legacy(rng, T.Q8_0, [0])

    # k-quants: f16 field offsets within the block.
    for qtype, fields in [(T.Q2_K, [80, 82]), (T.Q3_K, [108]), (T.Q4_K, [0, 2]),
                          (T.Q5_K, [0, 2]), (T.Q6_K, [208])]:
        raw = raw_blocks(rng, qtype, 5, fields)
        write(qtype.name, raw, dequant(raw, qtype))

    write_pywriter_gguf(rng)
    return 0


def write_pywriter_gguf(rng: np.random.Generator) -> None:
    path = os.path.join(ROOT, "pywriter.gguf.bin")
    w = gguf.GGUFWriter(path, arch="qwen2")
    w.add_uint32("general.alignment", 64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float32("t.f32", 1.5)
    w.add_float64("t.f64", -2.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "", "ccc"])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    w.add_array("t.arr_empty", [])
    w.add_tensor("a.f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("b.f16", (np.arange(64, dtype=np.float32) / 8).astype(np.float16).reshape(2, 32))
    q = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), T.Q8_0)
    w.add_tensor("c.q8_0", q, raw_shape=q.shape, raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"pywriter.gguf.bin: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    sys.exit(main())
