#!/usr/bin/env python3
"""Regenerates the non-audio seeds under fuzz/seeds/ (audio: make-audio-seeds.sh).

Run from the repository root, with the models provisioned (models/provision):
    models/.venv/bin/python fuzz/seeds/make-seeds.py
Reads audio-samples/jfk.wav, audio-samples/refs.tsv, the tiny.en token table and the
encoders' metadata_props (needs the `onnx` package, which models/.venv has). Deterministic.
"""
import base64
import json
import math
import struct
import wave
from pathlib import Path

SEEDS = Path("fuzz/seeds")
TOKENS = Path("models/whisper-tiny.en/tiny.en-tokens.txt")
ENCODERS = {  # seed name -> encoder whose metadata_props it holds
    "tiny.en-encoder": "models/whisper-tiny.en/tiny.en-encoder.onnx",
    "tiny.en-sherpa-encoder": "models/whisper-tiny.en-sherpa/tiny.en-encoder.onnx",
    "base-encoder": "models/whisper-base/base-encoder.onnx",
}


def write(target, name, data):
    path = SEEDS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def jfk(start_s, length_s):
    """Samples of audio-samples/jfk.wav (16 kHz mono s16) as floats in [-1, 1)."""
    with wave.open("audio-samples/jfk.wav") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        w.setpos(int(start_s * 16000))
        raw = w.readframes(int(length_s * 16000))
    return [s / 32768 for s in struct.unpack(f"<{len(raw) // 2}h", raw)]


def f32le(xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def u16le(ids):
    return b"".join(struct.pack("<H", i) for i in ids)


def log_mel():
    # [k] [r] [k chunk-size bytes] [f32 samples]; see fuzz_targets/log_mel.rs.
    speech = jfk(0.5, 0.3)
    write("log_mel", "jfk-0.3s-chunks-1-37-160-repeat4.bin", bytes([3, 3, 0, 36, 159]) + f32le(speech))
    write("log_mel", "jfk-0.1s-one-push.bin", bytes([0, 0]) + f32le(speech[:1600]))
    special = list(speech[:1000])
    for i, x in zip(range(50, 1000, 90), [math.nan, math.inf, -math.inf, 1e30, -1e30, 1e-45,
                                          3.4028234663852886e38, -0.0, math.nan, 65504.0, -1e-38]):
        special[i] = x
    write("log_mel", "jfk-nan-inf-huge-chunks-200-1000.bin", bytes([2, 0, 199, 201]) + f32le(special))
    write("log_mel", "silence-0.05s-chunk-160.bin", bytes([1, 1, 159]) + f32le([0.0] * 800))


def tokenizer():
    refs = dict(line.rstrip("\n").split("\t", 1) for line in open("audio-samples/refs.tsv"))
    write("tokenizer", "text-jfk.txt", refs["jfk"])
    write("tokenizer", "text-librispeech-1089.txt", refs["1089-134686-0000"])
    write("tokenizer", "text-prompt-punctuation.txt",
          " Glossary: ONNX, Whisper, log-mel. It's 3:45pm; we'll meet at 10:00 \u2014 don't be late!\n"
          "\tTabs, double  spaces   and a trailing newline\n")
    write("tokenizer", "text-multilingual.txt",
          "Gr\u00fc\u00dfe aus M\u00fcnchen. \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002 "
          "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! caf\u00e9 na\u00efve \U0001f399\ufe0f 1,234.56 \u20ac")
    table = {}
    for line in open(TOKENS):
        b64, i = line.rstrip("\n").rsplit(" ", 1)
        table.setdefault(base64.b64decode(b64), int(i))
    # The jfk line as tiny.en's tokens: every word (with its leading space) is one token.
    words = ["And", " so", " my", " fellow", " Americans", ",", " ask", " not", " what", " your", " country",
             " can", " do", " for", " you", ",", " ask", " what", " you", " can", " do", " for", " your",
             " country", "."]
    ids = [table[w.encode()] for w in words]
    sot, eot, notimestamps, ts0 = 50257, 50256, 50362, 50363
    write("tokenizer", "ids-jfk-with-specials.bin", u16le([sot, notimestamps] + ids + [eot]))
    # Timestamps, and past the vocabulary: 0xFFFF escapes a raw u32.
    write("tokenizer", "ids-jfk-timestamps-out-of-range.bin",
          u16le([sot, ts0] + ids[:5] + [ts0 + 50, ts0 + 50] + ids[5:] + [ts0 + 550, eot])
          + b"\xff\xff" + struct.pack("<I", 0xFFFFFFFF) + b"\xff\xff" + struct.pack("<I", 51864))
    # "é" split across two single-byte tokens, then a dangling lead byte.
    write("tokenizer", "ids-split-utf8.bin", u16le([table[b" caf"], table[b"\xc3"], table[b"\xa9"], table[b"\xc3"]]))


def server_protocol():
    # Text messages as the clients send them: the web page (JSON.stringify), ws_check.py (json.dumps).
    write("server_protocol", "config-web-page.json", '{"type":"config","sample_rate":48000,"encoding":"f32le"}')
    write("server_protocol", "config-ws-check.json", json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le"}))
    write("server_protocol", "config-all-options.json", json.dumps({
        "type": "config", "sample_rate": 44100, "encoding": "pcm_s16le", "language": "en", "hop_ms": 500,
        "commit_policy": "la2", "min_silence_ms": 600, "vad_threshold": 0.5, "max_utterance_s": 20.0,
        "context_s": 5.5}))
    write("server_protocol", "end.json", '{"type":"end"}')
    speech = jfk(0.5, 0.02)
    write("server_protocol", "frame-s16-jfk-20ms.bin", struct.pack("<320h", *(int(x * 32768) for x in speech)))
    write("server_protocol", "frame-f32-jfk-10ms.bin", f32le(speech[:160]))
    # Multipart form fields (one name=value per line) as the OpenAI client sends them.
    write("server_protocol", "form-verbose-json-words.txt",
          "model=tiny.en\nresponse_format=verbose_json\ntimestamp_granularities[]=word\n"
          "timestamp_granularities[]=segment\nlanguage=en\ntemperature=0.0\n")
    write("server_protocol", "form-stream-text.txt",
          "model=tiny.en\nresponse_format=text\nstream=true\nprompt=Glossary: ONNX.\ninclude[]=logprobs\n")


def metadata():
    import onnx

    for name, path in ENCODERS.items():
        m = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in m.metadata_props}
        lines = [f"{k}={props[k]}\n" for k in sorted(props)]
        write("metadata", f"{name}.txt", "".join(lines))
        if name == "tiny.en-sherpa-encoder":
            # sherpa-onnx's own export stores neither (timestamp_begin is derived).
            drop = ("timestamp_begin", "alignment_heads")
            write("metadata", "tiny.en-sherpa-no-timestamp-begin.txt",
                  "".join(f"{k}={props[k]}\n" for k in sorted(props) if k not in drop))


if __name__ == "__main__":
    log_mel()
    tokenizer()
    server_protocol()
    metadata()
