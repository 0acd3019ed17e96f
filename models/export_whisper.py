#!/usr/bin/env python3
"""Export a Whisper model stored as a CTranslate2 `model.bin` to ONNX.

Files (names as sherpa-onnx's Whisper export, so the folder layout is the same):
  <out>/<name>-encoder.onnx, <out>/<name>-decoder.onnx       fp32
  <out>/<name>-encoder.int8.onnx, <out>/<name>-decoder.int8.onnx   int8 weights (see "int8" below)
  <out>/<name>-tokens.txt       `<base64 bytes> <id>` for every id below end-of-text (sherpa-onnx format)
  <out>/metadata.json           the encoder's metadata_props, for people

Two tensor contracts (`--layout`); the network and the weights are the same:

steno (default): built for speed on CPU.
  encoder  mel [N, n_mels, T] (T dynamic, <= 3000: no padding of short audio to 30 s)
           -> cross_k_i, cross_v_i [N, H, T/2, dh] for each decoder layer i (head-major)
  decoder  token_rows [N, n, D] f32 (the tokens' embedding rows, see TOKEN_ROWS below),
           offset [1] i64, n_logits [1] i64 (1 <= n_logits <= n),
           prefix_k_i / prefix_v_i [1, H, P, dh] (positions 0..P, shared by all N rows; P may
           be 0), past_k_i / past_v_i [N, H, C, dh] (each row's own positions P.. in a buffer of
           C >= offset + n - P; its first offset - P hold what the row was fed so far; see
           SELF_CACHE), cross_k_i / cross_v_i [1 or N, H, T/2, dh] (one row is shared by all N)
           -> logits [N, n_logits, n_vocab] (the last n_logits positions), present_k_i / present_v_i
              [N, H, C, dh] (the past buffer with buffer positions offset-P..offset-P+n written),
              cross_qk [N, n, n_alignment_heads, T/2] (pre-softmax cross-attention scores of the
              alignment heads, for word timestamps)
  Why: cross K/V broadcast over beams instead of being copied per beam, and only the last
  n_logits positions' logits are computed (the tied projection is the largest matmul;
  n_logits > 1 verifies a draft of tokens in one call).

SELF_CACHE (steno layout). A self-attention cache in two parts, written in place:
  - The prefix, one row for all N: the positions every hypothesis shares (a window's prompt and
    start tokens, fed once at N = 1 before the beams or best-of rows part).
  - Each row's buffer of C positions, which the caller binds as both past_k_i and present_k_i
    (ONNX Runtime's I/O binding). TensorScatter (opset 24) writes the n new positions into it at
    s = offset - P, in place. Without the binding the result is the same, through a copy.
  Attention: scores of the scaled q against the prefix's keys and against the whole buffer's
  (positions past s + t masked for new token t, so nothing past what is filled is read into the
  result) go through one softmax, then the two value products are added. That is exactly
  softmax attention over the P + s + n positions. Any N may feed several tokens at any offset.
  The caller picks C (steno grows it as the rows' tokens come, up to n_text_ctx - P). The
  decoder's metadata_props say `self_cache=shared_buffer`; the prefix inputs mark this version.
  Why, against the GroupQueryAttention over one buffer per row that this replaced (December
  2026, tiny.en, peak RSS of a 20-minute file at beam 5 by benches/rss_vs_length.py): every
  beam row held its own copy of the prompt, up to 227 of a window's 448 positions, and the
  rows' buffers grew to 448 positions. int8 155.9 -> 137.7 MiB, fp32 246.4 -> 224.5 MiB.
  Before that a Concat of past and new positions wrote a new cache every step, and both
  stayed resident while the call ran (one layer at 5 beams, 250-350 positions: 2.65 ms against
  0.56 ms for an in-place write, a Python ORT check, 2 threads).

CROSS_GROUPS (steno layout). Cross-attention takes the N rows as Nk groups of G = N / Nk rows,
  one group per cross K/V row (Nk = 1: every beam row shares the window's keys), and each head
  multiplies all G * n queries of its group against the keys in one matmul: q [N, n, D] ->
  [Nk, G, n, H, dh] -> [Nk, H, G * n, dh]. A broadcast matmul of [N, H, n, dh] against [1, H,
  T/2, dh] runs one product per row and head instead and reads the keys and values N times.
  One-row calls compute exactly what they did; several rows sharing the keys differ in the last
  bits (fp32 logits within 6e-6). The fp32 graph only. Why (2026-12-03, tiny.en, 2 threads, a
  2-core Xeon with much CPU steal that afternoon): a step of 5 rows against 30 s of cross K/V,
  both graphs alternately in one Python ONNX Runtime process, 200 calls each, median per-pair
  time ratio grouped / broadcast: fp32 0.88, 0.92, 0.95 (one row 1.00, 0.96, 1.00), int8 0.74,
  0.77, 1.00 (one row 0.95, 0.98, 0.99). `steno eval --beam-size 5` wall seconds, the two fp32
  graphs alternately, broadcast / grouped: LibriSpeech 31.9, 32.7, 32.7 / 28.0, 31.8, 33.0;
  long-form 16.0, 15.2, 11.8 / 14.8, 12.3, 14.0; hifitts 23.7, 23.7 / 23.2, 22.4; the same
  transcripts. The int8 graph keeps the broadcast: grouped, its beam-5 transcripts moved (int8
  rounds the slightly different activations differently) and int8 WER against fp32 went to
  +0.90 on LibriSpeech (11.12 against 10.22; hifitts -0.32, long-form -0.30), past the +0.3
  that the broadcast graph meets (+0.26). That margin is noise-sized (see "int8"), so this is
  a choice to keep a measured state, not evidence that grouping hurts int8.

sherpa: sherpa-onnx's contract (scripts/whisper/export-onnx.py), for compatibility.
  encoder  mel [N, n_mels, 3000] -> n_layer_cross_k, n_layer_cross_v [L, N, 1500, D]
  decoder  tokens [N, n], in_n_layer_self_k_cache / in_n_layer_self_v_cache [L, N, 448, D],
           n_layer_cross_k, n_layer_cross_v, offset [1]
           -> logits [N, n, n_vocab], out_n_layer_self_k_cache / out_n_layer_self_v_cache [L, N, 448, D]

int8 (weights only; convolutions, layer norms, attention and positions stay fp32): every linear
  layer's weight in blocks of 32 input channels (symmetric, one fp32 scale per block), run by
  ONNX Runtime's MatMulNBits (bits=8, accuracy_level=4: activations are quantised per block
  too, int8 dot products). The token embedding is the logits projection's int8 weight,
  dequantised row by row after the Gather: one int8 copy. `--int8-encoder dynamic` puts the
  encoder on DynamicQuantizeMatMul instead (per-output-channel int8 weights, activations
  quantised per tensor at run time).
  Why (tiny.en, 2 threads, WER % by benches/compare; fp32 in brackets): the dynamic per-tensor
  scheme of onnxruntime.quantization.quantize_dynamic that this replaced gave 12.72 on
  LibriSpeech greedy [12.28], 13.11 once its embedding was tied to the int8 logits weight
  (those two with `steno eval` on an AVX2-only machine).
  Blocks in the decoder with the dynamic encoder: LibriSpeech 12.47 greedy / 10.67 beam 5
  [12.28 / 10.22], hifitts 9.27 / 8.19 [8.73 / 8.51], long-form 11.53 / 11.08 [11.38 / 9.86].
  Blocks everywhere: 11.63 / 11.05, 8.62 / 7.11, 11.53 / 10.02: five of the six within +0.3 of
  fp32 against three, at about the same speed on an AVX-512 VNNI CPU (LibriSpeech greedy RTFx
  65 against 63). On a CPU without VNNI the blocks encoder was slower (a 30 s window 940 ms
  against 607 ms): there `--int8-encoder dynamic` is the faster choice.
  Tried and not kept (2026-12-03, a Xeon with AVX-512 VNNI where the blocks encoder's 30 s
  window took 255-265 ms against fp32's 243-250 ms, MatMulNBits 55 % of it): per-output-channel
  int8 weights with each activation row quantised on its own at run time (QuantizeLinear per
  row, MatMulInteger, DequantizeLinear) ran the window in 179-182 ms, but int8 WER against fp32
  went to +0.26 / +0.32 on LibriSpeech (greedy / beam 5), +0.86 / +1.51 on hifitts, -0.15 /
  +0.76 on long-form (blocks: -0.39 / +0.26, -0.11 / -1.40, -0.61 / 0.00); keeping fc2 in
  blocks left hifitts at +0.43 / +1.19. Encoder blocks of 128 input channels instead of 32 (the
  decoder unchanged): the window 230-240 ms against 273-287 ms, int8 WER against fp32 +0.32 /
  +1.09, +0.43 / +0.54, -0.30 / +0.15. The encoder's MatMulNBits at accuracy_level=1 (the same
  int8 blocks, fp32 activations; the decoder unchanged), once ONNX Runtime's threads spun within
  a call: the window 198-228 ms against 240-265 ms (fp32: 219-227 ms), peak RSS of a 5-minute
  file 134.5 / 134.8 MiB against 137.0 / 137.6 (greedy / beam 5), but int8 WER against fp32
  -0.33 / +0.77, +0.11 / +0.33, -1.06 / +0.46. Its cross K/V are nearer fp32 than the shipped
  graph's (RMS error on the audio-samples clips 1.27 / 1.41 / 1.47 % against 1.83 / 2.19 /
  2.19 %), so those WER deltas are noise; re-timed that evening it was no faster (a 30 s window
  308 against 308-311 ms, alternately in one Python process).
  Also tried later that day (not kept): per-tensor activations (DynamicQuantizeMatMul) ran a
  [1500, 384] x [384, 1536] product in 2.4 ms against 8.9 ms for the blocks and 6.9 ms fp32, but
  lose the encoder: the last layer's fc2 input has one channel near 570 against a median of 2.5
  (the first 30 s of a long-form file), and a 30 s window's outputs came out with an RMS error
  of 7-11 % (blocks: 2-3 %). SmoothQuant scales (per-channel maxima over jfk.wav as is and
  padded to 30 s, alpha 0.15-0.5, folded into the layer norms and the V rows, a Mul before fc2;
  exact in fp32 to 4e-6) made the int8 error larger, not smaller, with per-tensor and with
  per-row activations. Per-row activations in layers 2-3 only, blocks in layers 0-1 (alone in
  rows, a layer-0 or -1 projection added up to 1.5 points of RMS error): the window 206-262 ms
  against 252-277 ms, int8 greedy WER long-form 11.08, LibriSpeech 12.34, hifitts 9.81 (+1.08
  against fp32). A trap seen on the way: with the row scales applied as Mul(Cast(MatMulInteger),
  Mul(row scales, column scales)), ONNX Runtime 1.31's graph optimiser produced wrong results
  (RMS error above 100 %; right with optimisations off); multiplying by the column scales first,
  then the row scales, avoided it.
  Tried at about 17:00 that day (not kept): the fp32 encoder with the int8 decoder (24 MB more
  encoder data) moved long-form greedy WER to 13.05 (fp32 11.38, int8 10.77); RTFx 36.6, 42.1,
  50.1 against 38.1, 32.7, 40.2 for the int8 encoder, run alternately. A rotation of the
  LayerNorm outputs before per-row quantisation (QuaRot: gamma folded into the weights, a
  random orthogonal matrix on the normalised stream; numpy, jfk.wav's encoder layer inputs)
  took the qkv and fc1 products' RMS error from 0.5-1.8 % to 0.4-1.4 % (worse on fc1 of
  layers 0-1), still above the blocks' 0.3-0.8 %: not built. Per-row activations in the
  feed-forward layers only (fc1 symmetric, fc2's GELU output asymmetric: u8 from each row's
  minimum to its maximum, the zero point taken out through the weight's column sums; qkv,
  attention out and cross K/V in blocks): cross K/V RMS error against fp32 2.3-3.4 % on
  audio-samples windows (blocks 1.8-2.6 %), the window 235 ms against 272 ms, int8 WER against
  fp32 -0.26 / +1.16 on LibriSpeech (greedy / beam 5), +0.11 / -1.07 on hifitts, -0.45 / +1.37
  on long-form. How much of such a delta is noise: benches/wer_noise.py (fp32 with unbiased
  weight noise of int8's size moves these six WERs with an RMS of 0.73 points over six seeds,
  and the three sets pooled with an RMS of 0.34 greedy / 0.40 beam 5; README).

TOKEN_ROWS (steno layout). The weights are external data, `<file>.data` beside each graph, every
  tensor at a 4096-byte-aligned offset. The decoder does not look tokens up: its input is the
  rows, which the caller reads from the logits projection's own table in that file. The
  decoder's metadata_props say where: `token_rows` (`f32`: [n_vocab, D] f32 rows; `u8_block32`:
  [n_vocab, D] uint8 with one f32 scale per 32 values, row = (q - 128) * scale, as MatMulNBits
  dequantises), `token_rows_file`, `token_rows_offset` and, for u8, `token_rows_scales_offset`
  ([n_vocab, D / 32] f32), in bytes.
  Why: ONNX Runtime prepacks the logits weight into a copy of its own and frees the original
  only when no other node reads it. With a Gather in the graph both stayed resident: 80 MB
  more for fp32 tiny.en (decoder session 220 -> 120 MB over its baseline once the Gather
  left; 20 MB for int8). The caller reads a few rows per step from the file instead.

The fp32 decoder's logits projection reads the token table transposed (FusedMatMul transB), so
the embedding is stored once (in the sherpa layout the Gather reads the same table). The encoder's self-attention is ONNX Runtime's MultiHeadAttention,
which on CPU computes attention in blocks (flash attention) instead of materialising the
[H, T/2, T/2] score matrix: a 30 s window's peak memory drops by about 70 MB, at the same speed.

Metadata (encoder metadata_props): sherpa-onnx's keys, plus steno's `timestamp_begin`,
`alignment_heads` (`layer:head,...`) and, for the steno layout, `steno_layout=1`.

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
from onnx.external_data_helper import set_external_data

OPSET = 17
SELF_CACHE_OPSET = 24  # the steno decoder: TensorScatter (see SELF_CACHE)
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


INT8_BLOCK = 32


def quantize_blocks(w):
    """w [out, in] -> (q uint8 [out, in / 32, 32], scales fp32 [out, in / 32]) with
    w ~= (q - 128) * scale: symmetric, one scale per block of 32 input channels (MatMulNBits'
    layout for bits=8, whose default zero point is 128)."""
    out, k = w.shape
    if k % INT8_BLOCK:
        sys.exit(f"int8: a weight with {k} input channels is not a multiple of {INT8_BLOCK}")
    blocks = w.reshape(out, k // INT8_BLOCK, INT8_BLOCK).astype(np.float32)
    scale = np.abs(blocks).max(axis=-1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(blocks / safe[..., None]), -127, 127) + 128
    return q.astype(np.uint8), scale.astype(np.float32)


def quantize_columns(w):
    """w [out, in] -> (q int8 [in, out], scales fp32 [out]): symmetric, one scale per output
    channel, DynamicQuantizeMatMul's layout."""
    scale = np.abs(w).max(axis=1).astype(np.float32) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


class Graph:
    def __init__(self, int8=None):
        """int8: None (fp32 weights), "blocks" (MatMulNBits) or "dynamic" (per-channel int8
        weights, activations quantised per tensor at run time: DynamicQuantizeMatMul)."""
        self.nodes, self.inits, self._n = [], [], 0
        self._consts = {}
        self.int8 = int8

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

    def quantized(self, name, w):
        """Store w [out, in] as MatMulNBits' int8 blocks: returns (weight name, scales name)."""
        q, scale = quantize_blocks(f32(w))
        return self.weight(self.fresh(name + "_q8"), q), self.weight(self.fresh(name + "_scales"), scale)

    def matmul_nbits(self, x, q8, n_out, n_in, outputs=None):
        """x @ w.T for w stored by `quantized`."""
        return self.op("MatMulNBits", [x, *q8], domain="com.microsoft", outputs=outputs, K=n_in, N=n_out, bits=8,
                       block_size=INT8_BLOCK, accuracy_level=4)

    def linear(self, x, w, b=None, name="linear"):
        """y = x @ w.T + b, with w [out, in] as CTranslate2 and PyTorch store it; int8 blocks
        when the graph is int8."""
        if self.int8 == "blocks":
            y = self.matmul_nbits(x, self.quantized(name, w), *w.shape)
        elif self.int8 == "dynamic":
            q, scale = quantize_columns(f32(w))
            y = self.op("DynamicQuantizeMatMul", [x, self.weight(self.fresh(name + "_i8"), q),
                                                  self.weight(self.fresh(name + "_scale"), scale)], domain="com.microsoft")
        else:
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


def fused_qkv(V, prefix, d, scale):
    """Q;K;V projection with the attention scale folded into Q and Whisper's missing key bias zeroed.

    Whisper scales q and k by dh**-0.25 each (scores by 1/sqrt(dh)); folding 1/sqrt(dh) into W_q
    and b_q is exact in real arithmetic."""
    (wq, bq), (wk, _bk), (wv, bv) = split_qkv(f32(V[prefix + "weight"]), f32(V[prefix + "bias"]), d)
    return np.concatenate([wq * scale, wk, wv]), np.concatenate([bq * scale, np.zeros(d, np.float32), bv])


def to_heads(g: Graph, x, n_head, dh):
    """[N, S, D] -> [N, H, S, dh]."""
    return g.op("Transpose", [g.op("Reshape", [x, g.ints([0, 0, n_head, dh])])], perm=[0, 2, 1, 3])


def from_heads(g: Graph, x, d):
    """[N, H, S, dh] -> [N, S, D]."""
    return g.op("Reshape", [g.op("Transpose", [x], perm=[0, 2, 1, 3]), g.ints([0, 0, d])])


def attend(g: Graph, q, k, v, mask=None):
    """Scaled dot-product attention on head-major tensors: q [N, H, n, dh] (already scaled),
    k, v [Nk, H, S, dh] with Nk = N or 1 (broadcast: every row shares the keys). Returns the
    output [N, H, n, dh] and the pre-softmax scores [N, H, n, S]. FusedMatMul multiplies by k's
    transpose without materialising it."""
    scores = g.op("FusedMatMul", [q, k], domain="com.microsoft", transB=1, alpha=1.0)
    masked = scores if mask is None else g.op("Add", [scores, mask])
    w = g.op("Softmax", [masked], axis=-1)
    return g.op("MatMul", [w, v]), scores


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------


def dims_of(V):
    """The network's sizes, read off the CTranslate2 variables."""

    def layers(side):
        return sum(1 for k in V if k.startswith(f"{side}/layer_") and k.endswith("self_attention/linear_0/weight"))

    return {
        "n_mels": V["encoder/conv1/weight"].shape[1],
        "d_audio": V["encoder/conv1/weight"].shape[0],
        "d_text": V["decoder/embeddings/weight"].shape[1],
        "n_vocab": V["decoder/embeddings/weight"].shape[0],
        "n_audio_layer": layers("encoder"),
        "n_text_layer": layers("decoder"),
        "n_audio_head": int(V["encoder/num_heads"]),
        "n_text_head": int(V["decoder/num_heads"]),
        "n_audio_ctx": V["encoder/position_encodings/encodings"].shape[0],
        "n_text_ctx": V["decoder/position_encodings/encodings"].shape[0],
    }


def build_encoder(V, dims, metadata, layout, int8=None):
    g = Graph(int8)
    d, n_mels, n_layer, n_head = dims["d_audio"], dims["n_mels"], dims["n_audio_layer"], dims["n_audio_head"]
    L, d_text, h_text = dims["n_text_layer"], dims["d_text"], dims["n_text_head"]
    dh = d // n_head

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
        w, b = fused_qkv(V, p + "self_attention/linear_0/", d, 1.0 / math.sqrt(dh))
        q, k, v = g.op("Split", [g.linear(h, w, b, name=f"enc{i}_qkv"), g.ints([d, d, d])], n_out=3, axis=2)
        # Blockwise (flash) attention on CPU; the scale is already folded into q.
        a = g.op("MultiHeadAttention", [q, k, v], domain="com.microsoft", num_heads=n_head, scale=1.0)
        a = g.linear(a, V[p + "self_attention/linear_1/weight"], V[p + "self_attention/linear_1/bias"],
                     name=f"enc{i}_sa_out")
        x = g.op("Add", [x, a])
        h = g.layer_norm(x, V[p + "ffn/layer_norm/gamma"], V[p + "ffn/layer_norm/beta"])
        h = g.gelu(g.linear(h, V[p + "ffn/linear_0/weight"], V[p + "ffn/linear_0/bias"], name=f"enc{i}_fc1"))
        x = g.op("Add", [x, g.linear(h, V[p + "ffn/linear_1/weight"], V[p + "ffn/linear_1/bias"], name=f"enc{i}_fc2")])
    x = g.layer_norm(x, V["encoder/layer_norm/gamma"], V["encoder/layer_norm/beta"])

    # Cross-attention keys and values of every decoder layer: keys of layers 0..L-1, then values.
    ws, bs = [], []
    for kind in ("k", "v"):
        for i in range(L):
            w = f32(V[f"decoder/layer_{i}/attention/linear_1/weight"])
            b = f32(V[f"decoder/layer_{i}/attention/linear_1/bias"])
            ws.append(w[:d_text] if kind == "k" else w[d_text:])
            bs.append(np.zeros(d_text, np.float32) if kind == "k" else b[d_text:])  # no key bias in Whisper

    if layout == "sherpa":
        kv = g.linear(x, np.concatenate(ws, axis=0), np.concatenate(bs), name="cross_kv")  # [N, T2, 2LD]
        kv = g.op("Reshape", [kv, g.ints([0, 0, 2 * L, d_text])])
        kv = g.op("Transpose", [kv], perm=[2, 0, 1, 3])  # [2L, N, T2, D]
        g.op("Split", [kv, g.ints([L, L])], n_out=2, axis=0, outputs=["n_layer_cross_k", "n_layer_cross_v"])
        mel_dims = ["N", n_mels, 2 * dims["n_audio_ctx"]]
        outputs = [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [L, "N", dims["n_audio_ctx"], d_text])
            for name in ("n_layer_cross_k", "n_layer_cross_v")
        ]
    else:
        # One projection per output, each written straight into its head-major tensor. One fused
        # [D, 2LD] matmul was no faster, and on a 30 s window its [N, T2, 2LD] result and the
        # transposed and split copies of it (18 MB each for tiny.en) set the encoder's peak:
        # fp32 steno transcribe of a 20-minute file peaked 19.5 MiB higher (int8 the same: its
        # peak was elsewhere). The outputs are bit-identical either way.
        dht = d_text // h_text
        names = [f"cross_k_{i}" for i in range(L)] + [f"cross_v_{i}" for i in range(L)]
        for w, b, name in zip(ws, bs, names):
            y = g.op("Reshape", [g.linear(x, w, b, name=name), g.ints([0, 0, h_text, dht])])
            g.op("Transpose", [y], perm=[0, 2, 1, 3], outputs=[name])  # [N, H, T2, dh]
        mel_dims = ["N", n_mels, "T"]
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", h_text, "T2", dht]) for n in names]

    graph = helper.make_graph(
        g.nodes,
        "whisper_encoder",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, mel_dims)],
        outputs,
        initializer=g.inits,
    )
    return finish(graph, metadata)


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------


def causal_mask(g: Graph, n, end):
    """[n, offset + n]: query i (absolute position offset + i) sees keys j <= offset + i."""
    zero, one = g.ints([0]), g.ints([1])
    rows = g.op("Add", [g.op("Range", [g.op("Squeeze", [zero]), g.op("Squeeze", [n]), g.op("Squeeze", [one])]), "offset"])
    cols = g.op("Range", [g.op("Squeeze", [zero]), g.op("Squeeze", [end]), g.op("Squeeze", [one])])
    future = g.op("Greater", [g.op("Unsqueeze", [cols, zero]), g.op("Unsqueeze", [rows, one])])
    return g.op("Where", [future, g.scalar_f(float("-inf")), g.scalar_f(0.0)])


def build_decoder(V, dims, alignment_heads, metadata, layout, int8=None):
    """The decoder; `layout` decides only how caches and cross K/V enter and leave (see the
    module doc), the network is the same."""
    g = Graph(int8)
    d, L, n_head, n_vocab, n_ctx = dims["d_text"], dims["n_text_layer"], dims["n_text_head"], dims["n_vocab"], dims["n_text_ctx"]
    dh = d // n_head
    scale = 1.0 / math.sqrt(dh)
    emb = f32(V["decoder/embeddings/weight"])
    zero = g.ints([0])

    # steno: the caller looks the token rows up itself (see TOKEN_ROWS) and feeds token_rows;
    # sherpa: the graph gathers them from tokens.
    rows_in = layout == "steno"
    n = g.op("Shape", ["token_rows" if rows_in else "tokens"], start=1, end=2)  # [1]
    end = g.op("Add", ["offset", n])  # [1]
    if int8:
        assert int8 == "blocks", "the int8 decoder's tied embedding is MatMulNBits blocks"
        # One int8 table for the lookup and the logits: gather the rows' blocks and scales and
        # dequantise them, (q - 128) * scale, then [N, n, D / 32, 32] -> [N, n, D].
        emb_q8 = g.quantized("token_embedding", emb)
        if rows_in:
            tok = "token_rows"
        else:
            rows = g.op("Sub", [g.op("Cast", [g.op("Gather", [emb_q8[0], "tokens"], axis=0)], to=TensorProto.FLOAT),
                                g.scalar_f(128.0)])
            scales = g.op("Unsqueeze", [g.op("Gather", [emb_q8[1], "tokens"], axis=0), g.ints([3])])
            tok = g.op("Reshape", [g.op("Mul", [rows, scales]), g.ints([0, 0, d])])
    else:
        tok_table = g.weight("token_embedding", emb)
        tok = "token_rows" if rows_in else g.op("Gather", [tok_table, "tokens"], axis=0)  # [N, n, D]
    pos = g.op("Slice", [g.weight("dec_pos", f32(V["decoder/position_encodings/encodings"])), "offset", end, zero])
    x = g.op("Add", [tok, pos])
    if layout == "sherpa":
        mask = causal_mask(g, n, end)
    else:
        # See SELF_CACHE: the rows' buffers hold positions prefix_len.. of each row; the n new
        # positions go to buffer index s = offset - prefix_len onwards (TensorScatter, in place),
        # and buffer index j is visible to new token t when j <= s + t.
        n_prefix = g.op("Shape", ["prefix_k_0"], start=2, end=3)  # [1]
        s = g.op("Sub", ["offset", n_prefix])  # [1]
        rows_n = g.op("Shape", ["token_rows"], start=0, end=1)  # [1]
        write_at = g.op("Expand", [s, rows_n])  # [N]
        capacity = g.op("Shape", ["past_k_0"], start=2, end=3)  # [1]
        one = g.ints([1])
        step = g.weight(g.fresh("const_i64_one"), np.array(1, dtype=np.int64))  # a scalar, as Range takes
        s0, n0, c0 = (g.op("Squeeze", [t, zero]) for t in (s, n, capacity))
        j = g.op("Range", [g.weight(g.fresh("const_i64_zero"), np.array(0, dtype=np.int64)), c0, step])  # [C]
        t = g.op("Unsqueeze", [g.op("Range", [s0, g.op("Add", [s0, n0]), step]), one])  # [n, 1]
        row_mask = g.op("Where", [g.op("Greater", [j, t]), g.scalar_f(-np.inf), g.scalar_f(0.0)])  # [n, C]
        splits = g.op("Concat", [n_prefix, capacity], axis=0)  # [2]

    # See CROSS_GROUPS: the N rows as Nk groups of G = N / Nk rows, one per cross K/V row (the
    # fp32 graph only: the int8 one keeps the broadcast, why there).
    grouped = layout == "steno" and not int8
    if grouped:
        n_audio = g.op("Shape", ["cross_k_0"], start=0, end=1)  # [1]
        groups = g.op("Div", [rows_n, n_audio])  # [1]
        t2 = g.op("Shape", ["cross_k_0"], start=2, end=3)  # [1]
        # q [N, n, D] -> [Nk, G, n, H, dh] (then [Nk, H, G, n, dh] -> [Nk, H, G*n, dh]) and back.
        q_split = g.op("Concat", [n_audio, groups, n, g.ints([n_head, dh])], axis=0)
        q_grouped = g.op("Concat", [n_audio, g.ints([n_head, -1, dh])], axis=0)
        a_split = g.op("Concat", [n_audio, g.ints([n_head]), groups, n, g.ints([dh])], axis=0)
        a_rows = g.op("Concat", [rows_n, n, g.ints([d])], axis=0)

    heads_by_layer = {}
    for layer, head in alignment_heads:
        heads_by_layer.setdefault(layer, []).append(head)

    cache_out = {"k": [], "v": []}
    qk_parts = []
    for i in range(L):
        p = f"decoder/layer_{i}/"
        # --- self attention over the cache
        h = g.layer_norm(x, V[p + "self_attention/layer_norm/gamma"], V[p + "self_attention/layer_norm/beta"])
        w, b = fused_qkv(V, p + "self_attention/linear_0/", d, scale)
        q, k, v = g.op("Split", [g.linear(h, w, b, name=f"dec{i}_qkv"), g.ints([d, d, d])], n_out=3, axis=2)
        if layout == "sherpa":
            full = {}
            for kind, new in (("k", k), ("v", v)):
                cache = f"in_n_layer_self_{kind}_cache"  # [L, N, 448, D]
                past = g.op("Slice", [cache, g.ints([i, 0]), g.op("Concat", [g.ints([i + 1]), "offset"], axis=0),
                                      g.ints([0, 2])])  # [1, N, offset, D]
                seq = g.op("Concat", [past, g.op("Unsqueeze", [new, zero])], axis=2)  # [1, N, offset + n, D]
                rest = g.op("Slice", [cache, g.op("Concat", [g.ints([i]), end], axis=0), g.ints([i + 1, n_ctx]),
                                      g.ints([0, 2])])
                cache_out[kind].append(g.op("Concat", [seq, rest], axis=2))  # [1, N, 448, D]
                full[kind] = to_heads(g, g.op("Squeeze", [seq, zero]), n_head, dh)
            a, _ = attend(g, to_heads(g, q, n_head, dh), full["k"], full["v"], mask)
            a = from_heads(g, a, d)
        else:
            # The rows' buffers are bound as both past and present: TensorScatter writes the n
            # new positions into them in place. The scores over the shared prefix and over the
            # row's buffer (masked past what is filled) share one softmax. q is already scaled.
            qh = to_heads(g, q, n_head, dh)
            present = {}
            for kind, new in (("k", k), ("v", v)):
                present[kind] = g.op("TensorScatter", [f"past_{kind}_{i}", to_heads(g, new, n_head, dh), write_at],
                                     outputs=[f"present_{kind}_{i}"], axis=2)
            on_prefix = g.op("FusedMatMul", [qh, f"prefix_k_{i}"], domain="com.microsoft", transB=1, alpha=1.0)
            on_rows = g.op("FusedMatMul", [qh, present["k"]], domain="com.microsoft", transB=1, alpha=1.0)
            w = g.op("Softmax", [g.op("Concat", [on_prefix, g.op("Add", [on_rows, row_mask])], axis=-1)], axis=-1)
            w_prefix, w_rows = g.op("Split", [w, splits], n_out=2, axis=-1)
            a = from_heads(g, g.op("Add", [g.op("MatMul", [w_prefix, f"prefix_v_{i}"]),
                                          g.op("MatMul", [w_rows, present["v"]])]), d)
        a = g.linear(a, V[p + "self_attention/linear_1/weight"], V[p + "self_attention/linear_1/bias"],
                     name=f"dec{i}_sa_out")
        x = g.op("Add", [x, a])
        # --- cross attention over the encoder's keys/values
        h = g.layer_norm(x, V[p + "attention/layer_norm/gamma"], V[p + "attention/layer_norm/beta"])
        q = g.linear(h, f32(V[p + "attention/linear_0/weight"]) * scale, f32(V[p + "attention/linear_0/bias"]) * scale,
                     name=f"dec{i}_xq")
        if layout == "sherpa":
            ck = to_heads(g, g.op("Squeeze", [g.op("Gather", ["n_layer_cross_k", g.ints([i])], axis=0), zero]), n_head, dh)
            cv = to_heads(g, g.op("Squeeze", [g.op("Gather", ["n_layer_cross_v", g.ints([i])], axis=0), zero]), n_head, dh)
        else:
            ck, cv = f"cross_k_{i}", f"cross_v_{i}"
        if not grouped:
            a, scores = attend(g, to_heads(g, q, n_head, dh), ck, cv)
            a = from_heads(g, a, d)
            if i in heads_by_layer and layout != "sherpa":
                qk_parts.append(g.op("Gather", [scores, g.ints(heads_by_layer[i])], axis=1))  # [N, A_i, n, T2]
        else:
            # CROSS_GROUPS: each group's rows are one matmul's rows against its keys.
            qg = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [q, q_split])], perm=[0, 3, 1, 2, 4]), q_grouped])
            a, scores = attend(g, qg, ck, cv)  # [Nk, H, G*n, dh], [Nk, H, G*n, T2]
            a = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [a, a_split])], perm=[0, 2, 3, 1, 4]), a_rows])
            if i in heads_by_layer:
                qk_parts.append(g.op("Gather", [scores, g.ints(heads_by_layer[i])], axis=1))  # [Nk, A_i, G*n, T2]
        a = g.linear(a, V[p + "attention/linear_2/weight"], V[p + "attention/linear_2/bias"],
                     name=f"dec{i}_xa_out")
        x = g.op("Add", [x, a])
        # --- MLP
        h = g.layer_norm(x, V[p + "ffn/layer_norm/gamma"], V[p + "ffn/layer_norm/beta"])
        h = g.gelu(g.linear(h, V[p + "ffn/linear_0/weight"], V[p + "ffn/linear_0/bias"], name=f"dec{i}_fc1"))
        x = g.op("Add", [x, g.linear(h, V[p + "ffn/linear_1/weight"], V[p + "ffn/linear_1/bias"], name=f"dec{i}_fc2")])

    if layout == "sherpa":
        g.op("Concat", cache_out["k"], axis=0, outputs=["out_n_layer_self_k_cache"])
        g.op("Concat", cache_out["v"], axis=0, outputs=["out_n_layer_self_v_cache"])
        last = x  # sherpa-onnx returns logits for every position
        logits_dims = ["N", "n_tokens", n_vocab]
    else:
        qk = g.op("Concat", qk_parts, axis=1)  # [N, A, n, T2]; grouped [Nk, A, G*n, T2]
        if not grouped:
            g.op("Transpose", [qk], perm=[0, 2, 1, 3], outputs=["cross_qk"])  # [N, n, A, T2]
        else:
            n_align = len(alignment_heads)
            qk = g.op("Reshape", [qk, g.op("Concat", [n_audio, g.ints([n_align]), groups, n, t2], axis=0)])
            qk = g.op("Transpose", [qk], perm=[0, 2, 3, 1, 4])  # [Nk, G, n, A, T2]
            g.op("Reshape", [qk, g.op("Concat", [rows_n, n, g.ints([n_align]), t2], axis=0)],
                 outputs=["cross_qk"])  # [N, n, A, T2]
        # The last `n_logits` positions only (1 while decoding step by step; more to verify a
        # draft of several tokens in one call): the tied projection is the largest matmul.
        first = g.op("Neg", ["n_logits"])
        last = g.op("Slice", [x, first, g.ints([2**62]), g.ints([1])])  # [N, n_logits, D]
        logits_dims = ["N", "n_logits", n_vocab]
    last = g.layer_norm(last, V["decoder/layer_norm/gamma"], V["decoder/layer_norm/beta"])
    # Tied output projection: the lookup's table, read transposed (FusedMatMul transB) or as
    # MatMulNBits' [V, D] blocks, so the embedding is stored once.
    if int8:
        g.matmul_nbits(last, emb_q8, n_vocab, d, outputs=["logits"])
    else:
        g.op("FusedMatMul", [last, tok_table], domain="com.microsoft", transB=1, alpha=1.0, outputs=["logits"])

    fl = TensorProto.FLOAT
    if rows_in:
        inputs = [helper.make_tensor_value_info("token_rows", fl, ["N", "n_tokens", d])]
    else:
        inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "n_tokens"])]
    outputs = [helper.make_tensor_value_info("logits", fl, logits_dims)]
    if layout == "sherpa":
        cache = [L, "N", n_ctx, d]
        inputs += [
            helper.make_tensor_value_info("in_n_layer_self_k_cache", fl, cache),
            helper.make_tensor_value_info("in_n_layer_self_v_cache", fl, cache),
            helper.make_tensor_value_info("n_layer_cross_k", fl, [L, "N", "T2", d]),
            helper.make_tensor_value_info("n_layer_cross_v", fl, [L, "N", "T2", d]),
            helper.make_tensor_value_info("offset", TensorProto.INT64, [1]),
        ]
        outputs += [
            helper.make_tensor_value_info("out_n_layer_self_k_cache", fl, cache),
            helper.make_tensor_value_info("out_n_layer_self_v_cache", fl, cache),
        ]
    else:
        inputs.append(helper.make_tensor_value_info("offset", TensorProto.INT64, [1]))
        inputs.append(helper.make_tensor_value_info("n_logits", TensorProto.INT64, [1]))
        for i in range(L):
            for kind in ("k", "v"):
                inputs.append(helper.make_tensor_value_info(f"past_{kind}_{i}", fl, ["N", n_head, "n_cache", dh]))
        for i in range(L):
            for kind in ("k", "v"):
                inputs.append(helper.make_tensor_value_info(f"prefix_{kind}_{i}", fl, [1, n_head, "n_prefix", dh]))
        for i in range(L):
            for kind in ("k", "v"):
                inputs.append(helper.make_tensor_value_info(f"cross_{kind}_{i}", fl, ["N_audio", n_head, "T2", dh]))
        for i in range(L):
            for kind in ("k", "v"):
                outputs.append(helper.make_tensor_value_info(f"present_{kind}_{i}", fl, ["N", n_head, "n_cache", dh]))
        outputs.append(helper.make_tensor_value_info("cross_qk", fl, ["N", "n_tokens", len(alignment_heads), "T2"]))
    graph = helper.make_graph(g.nodes, "whisper_decoder", inputs, outputs, initializer=g.inits)
    if layout == "steno":
        metadata = dict(metadata, self_cache="shared_buffer")  # see SELF_CACHE
    if rows_in:
        metadata = dict(metadata, token_rows="u8_block32" if int8 else "f32",
                        token_rows_table=emb_q8[0] if int8 else tok_table)
        if int8:
            metadata["token_rows_scales"] = emb_q8[1]
    # TensorScatter is opset 24; the encoder stays at OPSET.
    return finish(graph, metadata, opset=SELF_CACHE_OPSET if layout == "steno" else OPSET)


def finish(graph, metadata, opset=OPSET):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
        producer_name="steno models/export_whisper.py",
    )
    # The oldest IR that carries these opsets (8 for opset 17; TensorScatter's 24 needs 10).
    model.ir_version = max(8, helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(model)
    return model


EXTERNAL_ALIGN = 4096
EXTERNAL_MIN_BYTES = 1024


def save(model, path: Path, external: bool):
    """Write `model` to `path`; with `external`, every initializer of EXTERNAL_MIN_BYTES or more
    goes to `<path>.data`, each at an offset aligned to EXTERNAL_ALIGN (ONNX Runtime maps aligned
    external data instead of copying it, and the model's protobuf no longer holds the weights
    while the session is built: a lower peak while loading). A decoder's `token_rows_table` /
    `token_rows_scales` metadata (initializer names) become `token_rows_file`,
    `token_rows_offset` and `token_rows_scales_offset` (bytes into that file): see TOKEN_ROWS."""
    props = {p.key: p for p in model.metadata_props}
    if not external:
        for key in ("token_rows_table", "token_rows_scales"):
            assert key not in props, f"{key}: token rows need external data"
        onnx.save(model, path)
        return
    data_name = path.name + ".data"
    offsets = {}
    with open(path.parent / data_name, "wb") as f:
        for t in model.graph.initializer:
            if len(t.raw_data) < EXTERNAL_MIN_BYTES:
                continue
            f.write(b"\0" * (-f.tell() % EXTERNAL_ALIGN))
            offsets[t.name] = f.tell()
            f.write(t.raw_data)
            set_external_data(t, data_name, offsets[t.name], len(t.raw_data))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
    for key, new_key in (("token_rows_table", "token_rows_offset"), ("token_rows_scales", "token_rows_scales_offset")):
        if key in props:
            entry = props[key]
            entry.key, entry.value = new_key, str(offsets[entry.value])
    if "token_rows_offset" in {p.key for p in model.metadata_props}:
        entry = model.metadata_props.add()
        entry.key, entry.value = "token_rows_file", data_name
    onnx.save(model, path)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct2-dir", type=Path, required=True, help="folder with model.bin, config.json, vocabulary.txt")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. models/whisper-tiny.en")
    ap.add_argument("--name", required=True, help="model name used in file names, e.g. tiny.en")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    ap.add_argument("--int8-encoder", choices=["blocks", "dynamic"], default="blocks",
                    help="int8 scheme of the encoder's linear layers (the decoder's is always blocks)")
    ap.add_argument("--layout", choices=["steno", "sherpa"], default="steno",
                    help="tensor contract: steno's (default) or sherpa-onnx's (see the module doc)")
    args = ap.parse_args()

    V = read_ct2(args.ct2_dir / "model.bin")
    config = json.loads((args.ct2_dir / "config.json").read_text())
    vocab = read_vocabulary(args.ct2_dir / "vocabulary.txt")
    sp = special_tokens(vocab)

    dims = dims_of(V)
    n_vocab = dims["n_vocab"]
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
        "n_mels": dims["n_mels"],
        "n_audio_ctx": dims["n_audio_ctx"],
        "n_audio_state": dims["d_audio"],
        "n_audio_head": dims["n_audio_head"],
        "n_audio_layer": dims["n_audio_layer"],
        "n_vocab": n_vocab,
        "n_text_ctx": dims["n_text_ctx"],
        "n_text_state": dims["d_text"],
        "n_text_head": dims["n_text_head"],
        "n_text_layer": dims["n_text_layer"],
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
    }

    args.out.mkdir(parents=True, exist_ok=True)
    byte_of = gpt2_byte_decoder()
    with open(args.out / f"{args.name}-tokens.txt", "w") as f:
        for i, sym in enumerate(vocab[: sp["eot"]]):
            raw = bytes(byte_of[c] for c in sym)
            f.write(f"{base64.b64encode(raw).decode()} {i}\n")

    if args.layout == "steno":
        metadata["steno_layout"] = "1"
    # sherpa-onnx reads a model's file into memory itself, so external data would not be found.
    external = args.layout == "steno"
    enc = build_encoder(V, dims, metadata, args.layout)
    save(enc, args.out / f"{args.name}-encoder.onnx", external)
    dec = build_decoder(V, dims, alignment_heads, metadata, args.layout)
    save(dec, args.out / f"{args.name}-decoder.onnx", external)
    (args.out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {args.out}/{args.name}-{{encoder,decoder}}.onnx ({json.dumps(dims)})")

    if not args.no_int8:
        enc = build_encoder(V, dims, metadata, args.layout, int8=args.int8_encoder)
        save(enc, args.out / f"{args.name}-encoder.int8.onnx", external)
        dec = build_decoder(V, dims, alignment_heads, metadata, args.layout, int8="blocks")
        save(dec, args.out / f"{args.name}-decoder.int8.onnx", external)
        print(f"wrote {args.out}/{args.name}-{{encoder,decoder}}.int8.onnx")


if __name__ == "__main__":
    main()
