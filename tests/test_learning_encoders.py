"""Encoders: offline loading, determinism, the prompt cache, and clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pointsman.learning.encoders import (
    CachedEncoder,
    EncoderError,
    SignalsEncoder,
    TfidfEncoder,
    WordLlamaEncoder,
    build_encoder,
)


def test_wordllama_loads_and_encodes_with_the_network_cut_off() -> None:
    # A fresh interpreter where any socket connection or DNS lookup raises.
    script = textwrap.dedent(
        """
        import socket
        def refuse(*a, **k):
            raise RuntimeError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import logging
        from pointsman.learning.encoders import WordLlamaEncoder
        enc = WordLlamaEncoder()
        vec = enc.encode(["How many legs does a spider have?"])
        assert vec.shape == (1, 256), vec.shape
        assert abs(float((vec ** 2).sum()) - 1.0) < 1e-4
        # Importing wordllama must not configure the host's logging.
        assert not logging.getLogger().handlers
        print("ok")
        """
    )
    env = {"HF_HUB_OFFLINE": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_wordllama_piecewise_tokens_are_stable_and_similar_texts_are_close() -> None:
    enc = WordLlamaEncoder()
    a, b, c = enc.encode(
        ["Solve for x: 2x + 3 = 11", "Solve for y: 3y - 2 = 7", "Write a haiku about autumn leaves"]
    )
    assert float(a @ b) > float(a @ c)
    again = WordLlamaEncoder().encode(["Solve for x: 2x + 3 = 11"])[0]
    assert np.array_equal(a, again)


def test_tfidf_fits_a_vocabulary_and_encodes_sparse_rows() -> None:
    texts = ["the cat sat", "the cat ran", "a dog ran", "the dog sat"]
    enc = TfidfEncoder.fit(texts, min_df=2)
    assert "the cat" in enc.vocabulary and "a" not in enc.vocabulary
    rows = enc.encode_sparse(["the cat sat on a mat"])
    idx, val = rows.row(0)
    assert set(enc.vocabulary[i] for i in idx) == {"the", "cat", "sat", "the cat"}
    assert float(np.linalg.norm(val)) == pytest.approx(1.0)
    rebuilt = build_encoder(enc.spec(), enc.arrays())
    assert np.array_equal(rebuilt.encode(["the cat sat"]), enc.encode(["the cat sat"]))


def test_signals_encoder_sees_numbers_code_and_options() -> None:
    enc = SignalsEncoder()
    names = SignalsEncoder.FEATURES
    maths, code, mcq = enc.encode(
        [
            "If 3 apples cost $1.20, how much do 7 apples cost?",
            "def add(a, b):\n    return a + b",
            "Which is a mammal?\nA. shark\nB. whale\nC. trout\nD. eel\nAnswer:",
        ]
    )
    assert maths[names.index("log_numbers")] > code[names.index("log_numbers")]
    assert code[names.index("log_code_markers")] > maths[names.index("log_code_markers")]
    assert mcq[names.index("log_options")] == pytest.approx(np.log1p(4))


def test_cached_encoder_reuses_embeddings_and_stays_bounded() -> None:
    enc = CachedEncoder(SignalsEncoder(), size=2)
    first = enc.encode(["one", "two"])
    again = enc.encode(["two", "one"])
    assert np.array_equal(first[::-1], again)
    assert (enc.hits, enc.misses) == (2, 2)
    enc.encode(["three"])
    assert len(enc._cache) == 2


def test_sentence_transformers_without_the_extra_says_how_to_install_it() -> None:
    pytest.importorskip("numpy")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("sentence-transformers is installed here")
    with pytest.raises(EncoderError, match=r"pip install 'pointsman\[embeddings\]'"):
        build_encoder({"kind": "sentence-transformers", "model": "all-MiniLM-L6-v2"})


def test_unknown_encoder_kind_is_named() -> None:
    with pytest.raises(EncoderError, match="unknown encoder kind 'glove'"):
        build_encoder({"kind": "glove"})
