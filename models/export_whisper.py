#!/usr/bin/env python3
"""Export a Whisper model stored as a CTranslate2 `model.bin` to ONNX.

Output (the sherpa-onnx Whisper layout, so steno and sherpa-onnx users share one format):

  <out>/<name>-encoder.onnx   mel [N, n_mels, T]  ->  n_layer_cross_k, n_layer_cross_v [n_text_layer, N, T/2, D]
  <out>/<name>-decoder.onnx   tokens [N, n] i64, in_n_layer_self_k_cache / in_n_layer_self_v_cache
                              [n_text_layer, N, C, D], n_layer_cross_k / n_layer_cross_v, offset [1] i64
                              ->  logits [N, 1, n_vocab] (last position), out_n_layer_self_k_cache /
                                  out_n_layer_self_v_cache [n_text_layer, N, offset + n, D],
                                  cross_qk [N, n, n_alignment_heads, T/2] (extra, for word timestamps)
  <out>/<name>-tokens.txt     `<base64 bytes> <id>` for every id below end-of-text (sherpa-onnx format)
  <out>/<name>-{encoder,decoder}.int8.onnx   dynamic int8 quantisation of the MatMul weights
  <out>/metadata.json         the same metadata as the encoder's metadata_props, for people

Where steno's export is more general than sherpa-onnx's (both load in steno, see src/model/):
- `T` (mel frames) is dynamic up to 3000: short audio is not padded to 30 s.
- the self-attention cache length `C` is dynamic: the decoder reads `cache[:, :, :offset]`, appends the
  new keys/values and returns `offset + n` positions, so each step copies only what is used; a
  multi-token call at `offset > 0` is valid (a causal mask over `offset + i`).
- only the last position's logits are computed (the tied projection is the decoder's largest matmul).
- cross attention never transposes the cached keys: a block-diagonal query does all heads in one
  matmul against the [T/2, D] keys (see `cross_attention`).

The network is OpenAI Whisper's (`whisper/model.py`): Conv1d(k3,p1)+GELU, Conv1d(k3,s2,p1)+GELU,
sinusoidal positions, pre-norm residual attention blocks, ln_post; decoder with learned positions,
self attention, cross attention, MLP, final LayerNorm, logits tied to the token embedding.
Variable names are CTranslate2's (`python/ctranslate2/specs/whisper_spec.py`).
"""

import argparse
import base64
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
LN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader (format: see shared/facts/ct2-whisper-model-bin.md)
# ---------------------------------------------------------------------------------------------

CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2(path: Path) -> dict:
    data = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take("H")
        s = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != 6:
        sys.exit(f"{path}: CTranslate2 binary version {version}, this exporter reads version 6")
    spec = string()
    if spec != "WhisperSpec":
        sys.exit(f"{path}: spec {spec!r} is not WhisperSpec")
    _revision = take("I")
    n_vars = take("I")
    variables = {}
    for _ in range(n_vars):
        name = string()
        rank = take("B")
        dims = [take("I") for _ in range(rank)]
        dtype = take("B")
        n_bytes = take("I")
        raw = data[pos : pos + n_bytes]
        pos += n_bytes
        kind = CT2_DTYPES.get(dtype)
        if kind is None:
            sys.exit(f"{path}: variable {name} has unknown dtype {dtype}")
        if kind == "bfloat16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=kind)
        variables[name] = arr.reshape(dims)
    n_alias = take("I")
    for _ in range(n_alias):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Vocabulary and special tokens
# ---------------------------------------------------------------------------------------------


def gpt2_byte_decoder():
    """Inverse of GPT-2's bytes_to_unicode (openai/gpt-2 encoder.py): symbol -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def read_vocabulary(path: Path):
    # Split on '\n' only: some symbols are characters Python's splitlines() treats as breaks.
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def special_tokens(vocab):
    ids = {tok: i for i, tok in enumerate(vocab) if tok.startswith("<|") and tok.endswith("|>")}

    def need(tok):
        if tok not in ids:
            sys.exit(f"vocabulary has no {tok}")
        return ids[tok]

    eot = need("<|endoftext|>")
    sot = need("<|startoftranscript|>")
    lang_tokens, lang_codes = [], []
    for i in range(sot + 1, len(vocab)):
        t = vocab[i]
        if t in ("<|translate|>", "<|transcribe|>"):
            break
        lang_tokens.append(i)
        lang_codes.append(t[2:-2])
    first_ts = need("<|0.00|>")
    return {
        "eot": eot,
        "sot": sot,
        "translate": need("<|translate|>"),
        "transcribe": need("<|transcribe|>"),
        "sot_lm": need("<|startoflm|>"),
        "sot_prev": need("<|startofprev|>"),
        "no_speech": ids.get("<|nospeech|>", ids.get("<|nocaptions|>")),
        "no_timestamps": need("<|notimestamps|>"),
        "timestamp_begin": first_ts,
        "lang_tokens": lang_tokens,
        "lang_codes": lang_codes,
    }


# ---------------------------------------------------------------------------------------------
# A small graph builder
# ---------------------------------------------------------------------------------------------


class Graph:
    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0
        self._consts = {}

    def fresh(self, prefix):
        self._n += 1
        return f"{prefix}_{self._n}"

    def weight(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def ints(self, values):
        key = ("i64", tuple(values))
        if key not in self._consts:
            self._consts[key] = self.weight(self.fresh("const_i64"), np.array(values, dtype=np.int64))
        return self._consts[key]

    def scalar_f(self, value):
        key = ("f32", value)
        if key not in self._consts:
            self._consts[key] = self.weight(self.fresh("const_f32"), np.array(value, dtype=np.float32))
        return self._consts[key]

    def op(self, op_type, inputs, n_out=1, name=None, outputs=None, domain=None, **attrs):
        outs = outputs or [self.fresh(name or op_type) for _ in range(n_out)]
        node = helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type), **attrs)
        if domain:
            node.domain = domain
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    # building blocks ---------------------------------------------------------------------

    def linear(self, x, w, b=None, name="linear"):
        """y = x @ w.T + b, with w [out, in] as CTranslate2 and PyTorch store it."""
        y = self.op("MatMul", [x, self.weight(self.fresh(name + "_w"), f32(w).T.copy())])
        if b is not None and np.any(b):
            y = self.op("Add", [y, self.weight(self.fresh(name + "_b"), f32(b))])
        return y

    def layer_norm(self, x, gamma, beta, name="ln"):
        return self.op(
            "LayerNormalization",
            [x, self.weight(self.fresh(name + "_g"), f32(gamma)), self.weight(self.fresh(name + "_b"), f32(beta))],
            axis=-1,
            epsilon=LN_EPS,
        )

    def gelu(self, x):
        # Exact (erf) GELU: 0.5 x (1 + erf(x / sqrt 2)); ORT fuses this pattern into one Gelu kernel.
        e = self.op("Erf", [self.op("Div", [x, self.scalar_f(math.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.scalar_f(0.5)]), self.op("Add", [e, self.scalar_f(1.0)])])


def split_qkv(w, b, d):
    """Fused [3D, D] Q;K;V rows -> (w_q, b_q), (w_k, b_k), (w_v, b_v)."""
    return (w[:d], b[:d]), (w[d : 2 * d], b[d : 2 * d]), (w[2 * d :], b[2 * d :])


def head_mask(n_head, d):
    """[H, D]: row h is 1 on head h's slice of the model dimension."""
    dh = d // n_head
    m = np.zeros((n_head, d), dtype=np.float32)
    for h in range(n_head):
        m[h, h * dh : (h + 1) * dh] = 1.0
    return m


def self_attention_full(g: Graph, x, w_qkv, b_qkv, w_o, b_o, n_head, d, name):
    """Encoder self attention over all frames (no mask). x [N, T, D]."""
    dh = d // n_head
    scale = 1.0 / math.sqrt(dh)  # Whisper scales q and k by dh**-0.25 each; folded into W_q, b_q.
    (wq, bq), (wk, bk), (wv, bv) = split_qkv(f32(w_qkv), f32(b_qkv), d)
    w = np.concatenate([wq * scale, wk, wv], axis=0)
    b = np.concatenate([bq * scale, np.zeros_like(bk), bv])  # Whisper's key projection has no bias.
    qkv = g.linear(x, w, b, name=name + "_qkv")
    q, k, v = g.op("Split", [qkv, g.ints([d, d, d])], n_out=3, axis=2)
    heads = g.ints([0, 0, n_head, dh])
    q = g.op("Transpose", [g.op("Reshape", [q, heads])], perm=[0, 2, 1, 3])  # [N, H, T, dh]
    k = g.op("Transpose", [g.op("Reshape", [k, heads])], perm=[0, 2, 3, 1])  # [N, H, dh, T]
    v = g.op("Transpose", [g.op("Reshape", [v, heads])], perm=[0, 2, 1, 3])  # [N, H, T, dh]
    w_att = g.op("Softmax", [g.op("MatMul", [q, k])], axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [w_att, v])], perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.ints([0, 0, d])])
    return g.linear(o, w_o, b_o, name=name + "_out")


def split_heads_shape(g: Graph, scores, n_head):
    """Target shape [N, n, H, S] for scores [N, n*H, S] (S is dynamic, so it is read at run time)."""
    return g.op("Concat", [g.ints([0, -1, n_head]), g.op("Shape", [scores], start=2, end=3)], axis=0)


def blockdiag_attention(g: Graph, q, k, v, n_head, d, mask=None, want_scores=False):
    """Multi-head attention with keys/values kept in their [N, S, D] layout (no per-call transpose).

    q [N, n, D] (already scaled), k, v [N, S, D]. The query is spread into a block-diagonal
    [N, n*H, D] matrix (row (i, h) holds q[i] on head h's columns only), so one matmul against
    the keys gives every head's scores [N, n*H, S]; after the softmax one matmul with the values
    gives [N, n*H, D] of which each row's own head block is kept (mask, then sum over heads).
    This trades H-fold redundant multiply-adds on small matrices for never copying the cached
    keys, which dominates a one-token decoder step over long audio.
    """
    hm = g.weight(g.fresh("head_mask"), head_mask(n_head, d))
    q_bd = g.op("Mul", [g.op("Unsqueeze", [q, g.ints([2])]), hm])  # [N, n, H, D]
    q_bd = g.op("Reshape", [q_bd, g.ints([0, -1, d])])  # [N, n*H, D]
    scores = g.op("FusedMatMul", [q_bd, k], domain="com.microsoft", transB=1, alpha=1.0)  # [N, n*H, S]
    if mask is not None:
        # mask [n, S] -> [n, 1, S] broadcast over heads, applied as [N, n, H, S]
        s4 = g.op("Reshape", [scores, split_heads_shape(g, scores, n_head)])
        s4 = g.op("Add", [s4, g.op("Unsqueeze", [mask, g.ints([1])])])
        scores = g.op("Reshape", [s4, g.op("Concat", [g.ints([0, -1]), g.op("Shape", [s4], start=3, end=4)], axis=0)])
    w_att = g.op("Softmax", [scores], axis=-1)
    o = g.op("MatMul", [w_att, v])  # [N, n*H, D]
    o = g.op("Reshape", [o, g.ints([0, -1, n_head, d])])  # [N, n, H, D]
    o = g.op("ReduceSum", [g.op("Mul", [o, hm]), g.ints([2])], keepdims=0)  # [N, n, D]
    if want_scores:
        return o, scores
    return o


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------


def build_encoder(V, dims, metadata):
    g = Graph()
    d, n_mels, n_layer, n_head = dims["d_audio"], dims["n_mels"], dims["n_audio_layer"], dims["n_audio_head"]
    n_text_layer, d_text = dims["n_text_layer"], dims["d_text"]

    x = g.op(
        "Conv",
        ["mel", g.weight("conv1_w", f32(V["encoder/conv1/weight"])), g.weight("conv1_b", f32(V["encoder/conv1/bias"]))],
        kernel_shape=[3],
        pads=[1, 1],
        strides=[1],
    )
    x = g.gelu(x)
    x = g.op(
        "Conv",
        [x, g.weight("conv2_w", f32(V["encoder/conv2/weight"])), g.weight("conv2_b", f32(V["encoder/conv2/bias"]))],
        kernel_shape=[3],
        pads=[1, 1],
        strides=[2],
    )
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [N, T/2, D]
    t2 = g.op("Shape", [x], start=1, end=2)
    pos = g.op("Slice", [g.weight("enc_pos", f32(V["encoder/position_encodings/encodings"])), g.ints([0]), t2, g.ints([0])])
    x = g.op("Add", [x, pos])

    for i in range(n_layer):
        p = f"encoder/layer_{i}/"
        h = g.layer_norm(x, V[p + "self_attention/layer_norm/gamma"], V[p + "self_attention/layer_norm/beta"])
        x = g.op(
            "Add",
            [
                x,
                self_attention_full(
                    g,
                    h,
                    V[p + "self_attention/linear_0/weight"],
                    V[p + "self_attention/linear_0/bias"],
                    V[p + "self_attention/linear_1/weight"],
                    V[p + "self_attention/linear_1/bias"],
                    n_head,
                    d,
                    f"enc{i}_sa",
                ),
            ],
        )
        h = g.layer_norm(x, V[p + "ffn/layer_norm/gamma"], V[p + "ffn/layer_norm/beta"])
        h = g.gelu(g.linear(h, V[p + "ffn/linear_0/weight"], V[p + "ffn/linear_0/bias"], name=f"enc{i}_fc1"))
        x = g.op("Add", [x, g.linear(h, V[p + "ffn/linear_1/weight"], V[p + "ffn/linear_1/bias"], name=f"enc{i}_fc2")])
    x = g.layer_norm(x, V["encoder/layer_norm/gamma"], V["encoder/layer_norm/beta"])

    # Cross-attention keys and values of every decoder layer, in one matmul: [D, 2 * L * D].
    ws, bs = [], []
    for kind in ("k", "v"):
        for i in range(n_text_layer):
            w = f32(V[f"decoder/layer_{i}/attention/linear_1/weight"])
            b = f32(V[f"decoder/layer_{i}/attention/linear_1/bias"])
            if kind == "k":
                ws.append(w[:d_text])
                bs.append(np.zeros(d_text, dtype=np.float32))  # no key bias in Whisper
            else:
                ws.append(w[d_text:])
                bs.append(b[d_text:])
    kv = g.linear(x, np.concatenate(ws, axis=0), np.concatenate(bs), name="cross_kv")  # [N, T2, 2LD]
    kv = g.op("Reshape", [kv, g.ints([0, 0, 2 * n_text_layer, d_text])])
    kv = g.op("Transpose", [kv], perm=[2, 0, 1, 3])  # [2L, N, T2, D]
    g.op("Split", [kv, g.ints([n_text_layer, n_text_layer])], n_out=2, axis=0,
         outputs=["n_layer_cross_k", "n_layer_cross_v"])

    graph = helper.make_graph(
        g.nodes,
        "whisper_encoder",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", n_mels, "T"])],
        [
            helper.make_tensor_value_info("n_layer_cross_k", TensorProto.FLOAT, [n_text_layer, "N", "T2", d_text]),
            helper.make_tensor_value_info("n_layer_cross_v", TensorProto.FLOAT, [n_text_layer, "N", "T2", d_text]),
        ],
        initializer=g.inits,
    )
    return finish(graph, metadata)


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------


def build_decoder(V, dims, alignment_heads, metadata):
    g = Graph()
    d, n_layer, n_head, n_vocab = dims["d_text"], dims["n_text_layer"], dims["n_text_head"], dims["n_vocab"]
    dh = d // n_head
    scale = 1.0 / math.sqrt(dh)
    emb = f32(V["decoder/embeddings/weight"])

    n = g.op("Shape", ["tokens"], start=1, end=2)  # [1]
    end = g.op("Add", ["offset", n])  # [1]
    tok = g.op("Gather", [g.weight("token_embedding", emb), "tokens"], axis=0)  # [N, n, D]
    pos = g.op("Slice", [g.weight("dec_pos", f32(V["decoder/position_encodings/encodings"])), "offset", end, g.ints([0])])
    x = g.op("Add", [tok, pos])

    # Causal mask [n, offset + n]: query i (absolute position offset + i) sees keys j <= offset + i.
    zero = g.ints([0])
    one = g.ints([1])
    rows = g.op("Add", [g.op("Range", [g.op("Squeeze", [zero]), g.op("Squeeze", [n]), g.op("Squeeze", [one])]), "offset"])
    cols = g.op("Range", [g.op("Squeeze", [zero]), g.op("Squeeze", [end]), g.op("Squeeze", [one])])
    future = g.op("Greater", [g.op("Unsqueeze", [cols, zero]), g.op("Unsqueeze", [rows, one])])
    mask = g.op("Where", [future, g.scalar_f(float("-inf")), g.scalar_f(0.0)])  # [n, offset + n]

    heads_by_layer = {}
    for layer, head in alignment_heads:
        heads_by_layer.setdefault(layer, []).append(head)

    out_k, out_v, qk_parts = [], [], []
    for i in range(n_layer):
        p = f"decoder/layer_{i}/"
        # --- self attention with the cache
        h = g.layer_norm(x, V[p + "self_attention/layer_norm/gamma"], V[p + "self_attention/layer_norm/beta"])
        (wq, bq), (wk, _bk), (wv, bv) = split_qkv(f32(V[p + "self_attention/linear_0/weight"]),
                                                   f32(V[p + "self_attention/linear_0/bias"]), d)
        qkv = g.linear(h, np.concatenate([wq * scale, wk, wv]), np.concatenate([bq * scale, np.zeros(d, np.float32), bv]),
                       name=f"dec{i}_qkv")
        q, k, v = g.op("Split", [qkv, g.ints([d, d, d])], n_out=3, axis=2)
        full = []
        for cache, new in (("in_n_layer_self_k_cache", k), ("in_n_layer_self_v_cache", v)):
            past = g.op("Slice", [cache, g.ints([i, 0]),
                                  g.op("Concat", [g.ints([i + 1]), "offset"], axis=0), g.ints([0, 2])])  # [1, N, offset, D]
            full.append(g.op("Concat", [past, g.op("Unsqueeze", [new, zero])], axis=2))  # [1, N, offset + n, D]
        out_k.append(full[0])
        out_v.append(full[1])
        kf = g.op("Squeeze", [full[0], zero])
        vf = g.op("Squeeze", [full[1], zero])
        a = blockdiag_attention(g, q, kf, vf, n_head, d, mask=mask)
        x = g.op("Add", [x, g.linear(a, V[p + "self_attention/linear_1/weight"], V[p + "self_attention/linear_1/bias"],
                                     name=f"dec{i}_sa_out")])
        # --- cross attention over the encoder's keys/values
        h = g.layer_norm(x, V[p + "attention/layer_norm/gamma"], V[p + "attention/layer_norm/beta"])
        q = g.linear(h, f32(V[p + "attention/linear_0/weight"]) * scale, f32(V[p + "attention/linear_0/bias"]) * scale,
                     name=f"dec{i}_xq")
        ck = g.op("Gather", ["n_layer_cross_k", g.ints([i])], axis=0)
        cv = g.op("Gather", ["n_layer_cross_v", g.ints([i])], axis=0)
        ck = g.op("Squeeze", [ck, zero])
        cv = g.op("Squeeze", [cv, zero])
        a, scores = blockdiag_attention(g, q, ck, cv, n_head, d, want_scores=True)
        if i in heads_by_layer:
            s4 = g.op("Reshape", [scores, split_heads_shape(g, scores, n_head)])  # [N, n, H, T2]
            qk_parts.append(g.op("Gather", [s4, g.ints(heads_by_layer[i])], axis=2))
        x = g.op("Add", [x, g.linear(a, V[p + "attention/linear_2/weight"], V[p + "attention/linear_2/bias"],
                                     name=f"dec{i}_xa_out")])
        # --- MLP
        h = g.layer_norm(x, V[p + "ffn/layer_norm/gamma"], V[p + "ffn/layer_norm/beta"])
        h = g.gelu(g.linear(h, V[p + "ffn/linear_0/weight"], V[p + "ffn/linear_0/bias"], name=f"dec{i}_fc1"))
        x = g.op("Add", [x, g.linear(h, V[p + "ffn/linear_1/weight"], V[p + "ffn/linear_1/bias"], name=f"dec{i}_fc2")])

    g.op("Concat", out_k, axis=0, outputs=["out_n_layer_self_k_cache"])
    g.op("Concat", out_v, axis=0, outputs=["out_n_layer_self_v_cache"])
    g.op("Concat", qk_parts, axis=2, outputs=["cross_qk"])

    last = g.op("Slice", [x, g.ints([-1]), g.ints([2**62]), g.ints([1])])  # [N, 1, D]
    last = g.layer_norm(last, V["decoder/layer_norm/gamma"], V["decoder/layer_norm/beta"])
    # Tied output projection: a separate [D, V] copy so the int8 export can quantise it as a MatMul.
    g.op("MatMul", [last, g.weight("logits_w", emb.T.copy())], outputs=["logits"])

    L = n_layer
    graph = helper.make_graph(
        g.nodes,
        "whisper_decoder",
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "n_tokens"]),
            helper.make_tensor_value_info("in_n_layer_self_k_cache", TensorProto.FLOAT, [L, "N", "n_cached", d]),
            helper.make_tensor_value_info("in_n_layer_self_v_cache", TensorProto.FLOAT, [L, "N", "n_cached", d]),
            helper.make_tensor_value_info("n_layer_cross_k", TensorProto.FLOAT, [L, "N", "T2", d]),
            helper.make_tensor_value_info("n_layer_cross_v", TensorProto.FLOAT, [L, "N", "T2", d]),
            helper.make_tensor_value_info("offset", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, n_vocab]),
            helper.make_tensor_value_info("out_n_layer_self_k_cache", TensorProto.FLOAT, [L, "N", "n_total", d]),
            helper.make_tensor_value_info("out_n_layer_self_v_cache", TensorProto.FLOAT, [L, "N", "n_total", d]),
            helper.make_tensor_value_info("cross_qk", TensorProto.FLOAT, ["N", "n_tokens", len(alignment_heads), "T2"]),
        ],
        initializer=g.inits,
    )
    return finish(graph, metadata)


def finish(graph, metadata):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="steno models/export_whisper.py",
    )
    model.ir_version = 8
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct2-dir", type=Path, required=True, help="folder with model.bin, config.json, vocabulary.txt")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. models/whisper-tiny.en")
    ap.add_argument("--name", required=True, help="model name used in file names, e.g. tiny.en")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    args = ap.parse_args()

    V = read_ct2(args.ct2_dir / "model.bin")
    config = json.loads((args.ct2_dir / "config.json").read_text())
    vocab = read_vocabulary(args.ct2_dir / "vocabulary.txt")
    sp = special_tokens(vocab)

    n_mels = V["encoder/conv1/weight"].shape[1]
    d_audio = V["encoder/conv1/weight"].shape[0]
    d_text = V["decoder/embeddings/weight"].shape[1]
    n_vocab = V["decoder/embeddings/weight"].shape[0]
    n_audio_layer = sum(1 for k in V if k.startswith("encoder/layer_") and k.endswith("self_attention/linear_0/weight"))
    n_text_layer = sum(1 for k in V if k.startswith("decoder/layer_") and k.endswith("self_attention/linear_0/weight"))
    dims = {
        "n_mels": n_mels,
        "d_audio": d_audio,
        "d_text": d_text,
        "n_vocab": n_vocab,
        "n_audio_layer": n_audio_layer,
        "n_text_layer": n_text_layer,
        "n_audio_head": int(V["encoder/num_heads"]),
        "n_text_head": int(V["decoder/num_heads"]),
        "n_audio_ctx": V["encoder/position_encodings/encodings"].shape[0],
        "n_text_ctx": V["decoder/position_encodings/encodings"].shape[0],
    }
    if len(vocab) != n_vocab:
        sys.exit(f"vocabulary.txt has {len(vocab)} tokens, the embedding {n_vocab}")
    multilingual = n_vocab >= 51865
    alignment_heads = [tuple(x) for x in config["alignment_heads"]]
    specials = {sp["eot"], sp["sot"], sp["translate"], sp["transcribe"], sp["sot_lm"], sp["sot_prev"], sp["no_speech"]}
    # CTranslate2's suppress_ids = Whisper's default suppress_tokens ("-1"): the non-speech symbols
    # plus the special tokens; keep the symbols, the special tokens are handled by rule.
    non_speech = [t for t in config["suppress_ids"] if t not in specials]
    sot_sequence = [sp["sot"]] + ([sp["lang_tokens"][0], sp["transcribe"]] if multilingual else [])

    metadata = {
        "model_type": f"whisper-{args.name}",
        "version": "1",
        "maintainer": "steno",
        "n_mels": n_mels,
        "n_audio_ctx": dims["n_audio_ctx"],
        "n_audio_state": d_audio,
        "n_audio_head": dims["n_audio_head"],
        "n_audio_layer": n_audio_layer,
        "n_vocab": n_vocab,
        "n_text_ctx": dims["n_text_ctx"],
        "n_text_state": d_text,
        "n_text_head": dims["n_text_head"],
        "n_text_layer": n_text_layer,
        "sot_sequence": ",".join(map(str, sot_sequence)),
        "all_language_tokens": ",".join(map(str, sp["lang_tokens"])),
        "all_language_codes": ",".join(sp["lang_codes"]),
        "sot": sp["sot"],
        "sot_index": 0,
        "eot": sp["eot"],
        "blank_id": 220,
        "is_multilingual": int(multilingual),
        "no_speech": sp["no_speech"],
        "non_speech_tokens": ",".join(map(str, non_speech)),
        "transcribe": sp["transcribe"],
        "translate": sp["translate"],
        "sot_prev": sp["sot_prev"],
        "sot_lm": sp["sot_lm"],
        "no_timestamps": sp["no_timestamps"],
        # steno additions (sherpa-onnx ignores unknown keys)
        "timestamp_begin": sp["timestamp_begin"],
        "alignment_heads": ",".join(f"{l}:{h}" for l, h in alignment_heads),
        "steno_export": "1",
    }

    args.out.mkdir(parents=True, exist_ok=True)
    byte_of = gpt2_byte_decoder()
    with open(args.out / f"{args.name}-tokens.txt", "w") as f:
        for i, sym in enumerate(vocab[: sp["eot"]]):
            raw = bytes(byte_of[c] for c in sym)
            f.write(f"{base64.b64encode(raw).decode()} {i}\n")

    enc = build_encoder(V, dims, metadata)
    onnx.save(enc, args.out / f"{args.name}-encoder.onnx")
    dec = build_decoder(V, dims, alignment_heads, metadata)
    onnx.save(dec, args.out / f"{args.name}-decoder.onnx")
    (args.out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {args.out}/{args.name}-{{encoder,decoder}}.onnx ({json.dumps(dims)})")

    if not args.no_int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for part in ("encoder", "decoder"):
            quantize_dynamic(
                model_input=args.out / f"{args.name}-{part}.onnx",
                model_output=args.out / f"{args.name}-{part}.int8.onnx",
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                # shape inference stops at com.microsoft ops; every quantised MatMul is float.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        print(f"wrote {args.out}/{args.name}-{{encoder,decoder}}.int8.onnx")


if __name__ == "__main__":
    main()
