"""The whole CUDA backend under Numba's CUDA simulator (no GPU) on the runtime tests' tiny llama with its
matrices in Q5_0 (q, up) and Q8_0 (the rest), so that the default path's int8 prompt tiles run: the
prompt's logits at every position against the same tokens fed one at a time through decode (the int8
matvec, the same rounding of the activations), and both against the CPU runtime with exact=True and by
default. Several minutes of CPU (a Python thread per GPU thread).

    python -P bench/cuda_sim_backend.py
"""
import os
import sys
import tempfile
import time

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from test_runtime_model import CONFIGS, EMBD, FF, HEADS, KV_HEADS, gguf_tensors, random_weights  # noqa: E402

from ggq.gguf_read import open_gguf  # noqa: E402
from ggq.gguf_write import TensorSpec, write_gguf  # noqa: E402
from ggq.quants import quantize  # noqa: E402
from ggq.runtime.model import Transformer  # noqa: E402

arch = "llama"
cfg = CONFIGS[arch]
w = random_weights(cfg, np.random.default_rng(5))
tensors = gguf_tensors(arch, cfg, w)
meta = {"general.architecture": arch, f"{arch}.block_count": cfg["layers"], f"{arch}.context_length": 64,
        f"{arch}.embedding_length": EMBD, f"{arch}.feed_forward_length": FF, f"{arch}.attention.head_count": HEADS,
        f"{arch}.attention.head_count_kv": KV_HEADS, f"{arch}.rope.freq_base": cfg["rope_base"],
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6, f"{arch}.attention.key_length": cfg["head_dim"],
        f"{arch}.attention.value_length": cfg["head_dim"]}
specs, data = [], []
for name, a in tensors.items():
    if a.ndim == 2 and name != "token_embd.weight":
        t = "Q5_0" if ("attn_q" in name or "ffn_up" in name) else "Q8_0"
        specs.append(TensorSpec(name, a.shape, t)); data.append(quantize(a, t))
    else:
        specs.append(TensorSpec(name, a.shape, "F32")); data.append(a)
path = Path(tempfile.mkdtemp()) / "tiny.gguf"
write_gguf(path, meta, specs, iter(data))
tokens = [3, 17, 42, 0, 8, 8, 49, 21, 5, 11, 30]
t0 = time.time()
out = {}
with open_gguf(path) as g:
    tf = Transformer(g, ctx_size=16, device="cuda")
    print("prompt_int", tf.backend.prompt_int, "kinds", tf.backend.w.qkv[0].kinds, flush=True)
    out["prompt"] = tf.forward(tokens, 0, all_logits=True).copy()
    steps = [tf.decode(t, j)[0].copy() for j, t in enumerate(tokens)]
    out["decode"] = np.vstack(steps)
for exact in (True, False):
    with open_gguf(path) as g:
        tf = Transformer(g, ctx_size=16, exact=exact)
        out[f"cpu_exact={exact}"] = tf.forward(tokens, 0, all_logits=True).copy()
scale = np.abs(out["cpu_exact=True"]).max()
for k in ("prompt", "decode", "cpu_exact=False"):
    print(k, "vs cpu exact: max", np.abs(out[k] - out["cpu_exact=True"]).max() / scale)
print("prompt vs decode: max", np.abs(out["prompt"] - out["decode"]).max() / scale, "time", time.time() - t0)
