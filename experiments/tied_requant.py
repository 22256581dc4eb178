#!/usr/bin/env python3
"""How much of a GGUF's token embedding can be rebuilt from its separate LM head.

Question (fifteenth session, experiments/LOG.md): the default model stores the tied embedding twice,
`token_embd.weight` as Q5_0 and `output.weight` as Q8_0, both quantized by llama.cpp from one
matrix. If ggml's reference Q5_0 quantizer applied to the dequantised Q8_0 rows reproduces most of
the Q5_0 blocks, the embedding can be stored as "requantize(output) XOR a small correction",
losslessly.

Usage: python3 experiments/tied_requant.py MODEL.gguf [ROWS]   (needs: pip install gguf numpy zstandard)
"""
import sys
import zlib

import gguf
import numpy as np

r = gguf.GGUFReader(sys.argv[1])
t = {x.name: x for x in r.tensors}
emb, out = t["token_embd.weight"], t["output.weight"]
assert emb.tensor_type.name == "Q5_0" and out.tensor_type.name == "Q8_0", (emb.tensor_type, out.tensor_type)
k = int(emb.shape[0])
rows = int(sys.argv[2]) if len(sys.argv) > 2 else int(emb.shape[1])
nb = rows * k // 32
eb = np.frombuffer(emb.data.tobytes(), dtype=np.uint8).reshape(-1, 22)[:nb]  # Q5_0: d f16, qh u32, qs[16]
ob = np.frombuffer(out.data.tobytes(), dtype=np.uint8).reshape(-1, 34)[:nb]  # Q8_0: d f16, qs[32] i8

# Dequantised Q8_0 (exact in f32), then ggml's quantize_row_q5_0_ref.
w = ob[:, :2].copy().view(np.float16).astype(np.float32) * ob[:, 2:].copy().view(np.int8).astype(np.float32)
mx = w[np.arange(nb), np.argmax(np.abs(w), axis=1)]
d = (mx / np.float32(-16.0)).astype(np.float32)
inv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, np.float32(1.0)), np.float32(0.0)).astype(np.float32)
q = np.minimum(31, np.trunc(w * inv[:, None] + np.float32(16.5))).astype(np.uint32)
d16 = d.astype(np.float16)

# The file's own codes, and the rebuilt block bytes.
qa = np.concatenate([eb[:, 6:] & 0x0F, eb[:, 6:] >> 4], axis=1).astype(np.uint32)
qh = eb[:, 2:6].copy().view(np.uint32)[:, 0]
qa |= ((qh[:, None] >> np.arange(32, dtype=np.uint32)[None, :]) & 1) << 4
rqh = np.zeros(nb, dtype=np.uint32)
for j in range(32):
    rqh |= ((q[:, j] >> 4) & 1) << j
rqs = ((q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)).astype(np.uint8)
rebuilt = np.concatenate([d16.view(np.uint8).reshape(nb, 2), rqh.view(np.uint8).reshape(nb, 4), rqs], axis=1)
xor = (rebuilt ^ eb).tobytes()

print(f"blocks {nb} ({rows} rows of {k})")
print(f"scales equal {np.mean(d16 == eb[:, :2].copy().view(np.float16)[:, 0]):.6f}")
print(f"codes equal {np.mean(q == qa):.6f}; blocks with every code equal {np.mean((q == qa).all(axis=1)):.4f}")
print(f"XOR bytes non-zero {np.mean(np.frombuffer(xor, np.uint8) != 0):.4f}")
print(f"XOR zlib-6: {100 * len(zlib.compress(xor, 6)) / len(xor):.2f} % of {len(xor)} bytes")
try:
    import zstandard

    print(f"XOR zstd-3: {100 * len(zstandard.ZstdCompressor(level=3).compress(xor)) / len(xor):.2f} %")
except ImportError:
    print("(pip install zstandard for the zstd figure)")
