"""`ggq kld` on a tiny random llama: the KL statistics against a numpy float64 oracle, the base logits
file against llama.cpp's documented --kl-divergence-base layout.

ORACLE: numpy float64 log-softmax of the very logits the runtime gives for each chunk (runtime logits are
tested elsewhere; here the statistics are under test). The base file stores log-probabilities as
uint16 levels (llama.cpp's format, step = 16 nats / 65535 at most), so KL, PPL and top-1 from the file
agree with the exact float64 ones to within that rounding, not bit for bit.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from ggq.cli import main
from ggq.convert.pipeline import convert
from ggq.runtime.kld import (HEADER_BYTES, kl_divergence, read_base_logits, row_width, save_base_logits,
                             scored_per_chunk)
from ggq.runtime.model import open_model
from ggq.runtime.tokenizer import Tokenizer
import tiny_checkpoints as tiny

N_CTX, N_CHUNKS = 32, 3
TEXT = "the quick brown fox jumps over the lazy dog; " * 40


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("kld")
    tiny.write_checkpoint(root / "ckpt", "llama", seed=3)
    base = convert(str(root / "ckpt"), "f32", str(root / "base.gguf"), quiet=True).path
    test = convert(str(root / "ckpt"), "q2_k", str(root / "test.gguf"), quiet=True).path
    (root / "text.txt").write_text(TEXT)
    return root, base, test


def _chunk_logits_and_tokens(path):
    """Every chunk's logits as the runtime gives them, and the tokens (oracle input)."""
    tf = open_model(path, ctx_size=N_CTX)
    tok = Tokenizer.from_metadata(tf.gguf.metadata)
    ids = np.asarray(tok.encode(TEXT, add_special=True, parse_special=False))
    out = []
    for c in range(N_CHUNKS):
        chunk = ids[c * N_CTX:(c + 1) * N_CTX].copy()
        if tok.add_bos and tok.bos_id is not None:
            chunk[0] = tok.bos_id
        tf.cache_tokens = []
        out.append(tf.forward(chunk, 0, all_logits=True).astype(np.float64))
    return out, ids


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _oracle(base_path, test_path):
    base_logits, ids = _chunk_logits_and_tokens(base_path)
    test_logits, _ = _chunk_logits_and_tokens(test_path)
    first = N_CTX // 2
    kl, nll, nll_base, same = [], [], [], []
    for c in range(N_CHUNKS):
        lp = _log_softmax(base_logits[c][first:N_CTX - 1])
        lq = _log_softmax(test_logits[c][first:N_CTX - 1])
        targets = ids[c * N_CTX + first + 1:(c + 1) * N_CTX]
        kl.append((np.exp(lp) * (lp - lq)).sum(axis=1))
        nll.append(-lq[np.arange(len(targets)), targets])
        nll_base.append(-lp[np.arange(len(targets)), targets])
        same.append(lp.argmax(axis=1) == lq.argmax(axis=1))
    return [np.concatenate(v) for v in (kl, nll, nll_base, same)]


def test_kld_matches_float64_oracle(models):
    root, base, test = models
    kl, nll, nll_base, same = _oracle(base, test)
    tf = open_model(base, ctx_size=N_CTX)
    tok = Tokenizer.from_metadata(tf.gguf.metadata)
    stored = save_base_logits(tf, tok, TEXT, root / "base.logits", N_CTX, N_CHUNKS)
    r = kl_divergence(open_model(test, ctx_size=N_CTX), tok, stored)
    assert r.count == len(kl) == N_CHUNKS * scored_per_chunk(N_CTX)
    assert kl.mean() > 1e-3  # q2_k really differs from f32, so the comparison means something
    assert r.mean_kld == pytest.approx(kl.mean(), rel=0.02, abs=2e-4)
    assert r.median_kld == pytest.approx(np.median(kl), rel=0.05, abs=2e-4)
    assert r.p99_kld == pytest.approx(np.percentile(kl, 99), rel=0.05, abs=2e-4)
    assert r.ppl == pytest.approx(np.exp(nll.mean()), rel=1e-5)
    assert r.ppl_base == pytest.approx(np.exp(nll_base.mean()), rel=1e-3)
    assert r.ppl_ratio == pytest.approx(np.exp(nll.mean() - nll_base.mean()), rel=1e-3)
    assert r.same_top == pytest.approx(same.mean(), abs=1.5 / len(same))


def test_base_file_layout(models):
    """Header, tokens and levels as llama.cpp's --kl-divergence-base file lays them out."""
    root, base, _ = models
    tf = open_model(base, ctx_size=N_CTX)
    tok = Tokenizer.from_metadata(tf.gguf.metadata)
    path = root / "layout.logits"
    save_base_logits(tf, tok, TEXT, path, N_CTX, N_CHUNKS)
    raw = path.read_bytes()
    n_vocab = tf.params.n_vocab
    assert raw[:8] == b"_logits_"
    assert list(np.frombuffer(raw[8:HEADER_BYTES], np.int32)) == [N_CTX, n_vocab, N_CHUNKS]
    ids = np.asarray(tok.encode(TEXT, add_special=True, parse_special=False))
    tokens = np.frombuffer(raw[HEADER_BYTES:HEADER_BYTES + 4 * N_CTX * N_CHUNKS], np.int32)
    assert np.array_equal(tokens, ids[:N_CTX * N_CHUNKS])  # as tokenized, BOS not substituted
    assert len(raw) == HEADER_BYTES + 4 * N_CTX * N_CHUNKS + 2 * N_CHUNKS * scored_per_chunk(N_CTX) * row_width(n_vocab)
    logits, _ = _chunk_logits_and_tokens(base)
    rows = read_base_logits(path).rows[0]
    scale, floor = rows[:, :4].copy().view(np.float32).T
    decoded = scale[:, None] * rows[:, 4:4 + n_vocab] + floor[:, None]
    exact = _log_softmax(logits[0][N_CTX // 2:N_CTX - 1])
    kept = exact > exact.max(axis=1, keepdims=True) - 15.9
    assert np.abs(decoded - exact)[kept].max() <= (scale.max() * 0.51 + 1e-5)


def test_kld_cli_caches_base_and_compares_many(models, capsys, tmp_path):
    root, base, test = models
    cache = tmp_path / "b.logits"
    argv = ["kld", str(base), str(test), str(base), "-f", str(root / "text.txt"), "--ctx", str(N_CTX),
            "--chunks", str(N_CHUNKS), "--base-logits", str(cache), "-t", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert cache.is_file() and out.count("mean KLD") == 2
    itself = out.split(f"{base}:")[-1]
    assert abs(float(re.search(r"mean KLD (\S+)", itself).group(1))) < 1e-5  # the base against itself
    assert "same top-1 100.000 %" in itself
    mtime = cache.stat().st_mtime_ns
    assert main(argv) == 0 and cache.stat().st_mtime_ns == mtime  # reused, not recomputed
    assert capsys.readouterr().out == out


def test_kld_cli_bad_base_file(models, capsys, tmp_path):
    _, _, test = models
    bad = tmp_path / "bad.logits"
    bad.write_bytes(b"_logits_" + b"\0" * 5)
    assert main(["kld", str(bad), str(test)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ggq: {bad}: ") and err.count("\n") == 1
