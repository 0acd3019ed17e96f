#!/usr/bin/env python3
"""Check `steno serve`'s OpenAI-compatible transcription endpoint with the official `openai` package.

    tests/clients/.venv/bin/python tests/clients/openai_check.py --base-url http://127.0.0.1:PORT [--api-key KEY]

Transcribes audio-samples/jfk.wav through `client.audio.transcriptions.create` as json,
verbose_json (word + segment timestamps), srt, vtt, text, a `prompt=` call and `stream=True`
(SSE deltas must concatenate to the done text), lists the models, and checks that a non-audio
upload raises `openai.BadRequestError` (400). With a real --api-key it also checks that a wrong
key gets `openai.AuthenticationError` (401). Prints one line per check; exits 1 on any mismatch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from _common import (JFK_KEY_PHRASES, JFK_WAV, CheckFailed, Checks, base_parser, expect, missing_phrases,
                     normalise, preflight, wav_info)

try:
    import openai
    from openai import OpenAI
except ImportError:
    sys.exit("openai_check.py: the openai package is missing; run tests/clients/provision and use "
             "tests/clients/.venv/bin/python")

SLACK_S = 0.5  # timestamps may run this far past the audio's duration


def no_proxy_client():
    """The openai package's default HTTP client, ignoring any *_PROXY variables (the server is local)."""
    return openai.DefaultHttpxClient(trust_env=False)


def expect_phrases(text: str, what: str) -> None:
    missing = missing_phrases(text)
    expect(not missing, f"{what} lacks {missing}: {text!r}")


def check_models(client: OpenAI, model: str) -> str:
    ids = [m.id for m in client.models.list()]
    expect(model in ids, f"model {model!r} not in /v1/models: {ids}")
    return f"models {ids}"


def check_json(client: OpenAI, audio: Path, model: str) -> str:
    with audio.open("rb") as f:
        r = client.audio.transcriptions.create(file=f, model=model, response_format="json")
    expect(isinstance(r.text, str), f"json: text is {type(r.text).__name__}")
    expect_phrases(r.text, "json text")
    return repr(r.text)


def check_verbose(client: OpenAI, audio: Path, model: str, duration: float) -> str:
    with audio.open("rb") as f:
        r = client.audio.transcriptions.create(
            file=f, model=model, response_format="verbose_json",
            timestamp_granularities=["word", "segment"])
    expect_phrases(r.text, "verbose_json text")
    expect(abs(float(r.duration) - duration) < 0.1,
           f"verbose_json duration {r.duration} != the file's {duration:.2f} s")
    expect(r.language in ("en", "english"), f"verbose_json language {r.language!r}, expected 'en'")
    segs = r.segments or []
    expect(len(segs) > 0, "verbose_json has no segments")
    prev_start = -1.0
    for s in segs:
        expect(0.0 <= s.start < s.end <= duration + SLACK_S,
               f"segment {s.id} times [{s.start}, {s.end}] not 0 <= start < end <= {duration + SLACK_S}")
        expect(s.start >= prev_start, f"segment {s.id} starts at {s.start}, before the previous ({prev_start})")
        prev_start = s.start
    expect_phrases(" ".join(s.text for s in segs), "verbose_json segments' text")
    words = r.words or []
    expect(len(words) > 0, "verbose_json has no words (timestamp_granularities=['word','segment'])")
    prev = 0.0
    for i, w in enumerate(words):
        expect(0.0 <= w.start <= w.end <= duration + SLACK_S,
               f"word {i} {w.word!r} times [{w.start}, {w.end}] not 0 <= start <= end <= {duration + SLACK_S}")
        expect(w.start >= prev - 1e-6, f"word {i} {w.word!r} starts at {w.start}, before the previous word's start {prev}")
        prev = w.start
    expect_phrases(" ".join(w.word for w in words), "verbose_json words")
    return (f"{len(segs)} segments [{segs[0].start:.2f}..{segs[-1].end:.2f}], {len(words)} words "
            f"[{words[0].start:.2f}..{words[-1].end:.2f}], duration {r.duration}")


_SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
_VTT_TIME = r"(?:(\d{2,}):)?(\d{2}):(\d{2})\.(\d{3})"


def _secs(groups) -> float:
    h, m, s, ms = (int(g) if g else 0 for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_cues(body: str, fmt: str, duration: float) -> list[str]:
    """The cue texts of an SRT or WebVTT document; raises CheckFailed on a malformed one."""
    body = body.replace("\r\n", "\n").strip("\n")
    if fmt == "vtt":
        expect(body.startswith("WEBVTT"), f"vtt does not start with 'WEBVTT': {body[:40]!r}")
        blocks = body.split("\n\n")[1:]
        time_re = re.compile(rf"^{_VTT_TIME} --> {_VTT_TIME}")
    else:
        expect(re.match(rf"1\n{_SRT_TIME} --> {_SRT_TIME}\n", body) is not None,
               f"srt does not start with '1\\nHH:MM:SS,mmm --> HH:MM:SS,mmm': {body[:60]!r}")
        blocks = body.split("\n\n")
        time_re = re.compile(rf"^{_SRT_TIME} --> {_SRT_TIME}$")
    texts, prev_start = [], -1.0
    for n, block in enumerate((b for b in blocks if b.strip()), start=1):
        lines = block.split("\n")
        if fmt == "srt":
            expect(lines[0].strip() == str(n), f"srt cue {n} numbered {lines[0]!r}")
            lines = lines[1:]
        elif not time_re.match(lines[0]) and len(lines) > 1:
            lines = lines[1:]  # an optional WebVTT cue identifier
        m = time_re.match(lines[0]) if lines else None
        expect(m is not None, f"{fmt} cue {n} has no timing line: {block!r}")
        g = m.groups()
        start, end = _secs(g[:4]), _secs(g[4:])
        expect(0 <= start <= end <= duration + SLACK_S, f"{fmt} cue {n} times {lines[0]!r} out of range")
        expect(start >= prev_start, f"{fmt} cue {n} starts before the previous cue")
        prev_start = start
        text = " ".join(lines[1:]).strip()
        expect(text != "", f"{fmt} cue {n} has no text")
        texts.append(text)
    expect(len(texts) > 0, f"{fmt} has no cues")
    return texts


def check_subtitles(client: OpenAI, audio: Path, model: str, fmt: str, duration: float) -> str:
    with audio.open("rb") as f:
        body = client.audio.transcriptions.create(file=f, model=model, response_format=fmt)
    expect(isinstance(body, str), f"{fmt}: the client returned {type(body).__name__}, not str")
    texts = parse_cues(body, fmt, duration)
    expect_phrases(" ".join(texts), f"{fmt} cues")
    return f"{len(texts)} cues, first {body.strip().splitlines()[:3]}"


def check_text(client: OpenAI, audio: Path, model: str) -> str:
    with audio.open("rb") as f:
        body = client.audio.transcriptions.create(file=f, model=model, response_format="text")
    expect(isinstance(body, str), f"text: the client returned {type(body).__name__}, not str")
    expect(not body.lstrip().startswith("{"), f"text response looks like JSON: {body[:80]!r}")
    expect_phrases(body, "text response")
    return repr(body)


def check_prompt(client: OpenAI, audio: Path, model: str) -> str:
    with audio.open("rb") as f:
        r = client.audio.transcriptions.create(
            file=f, model=model, response_format="json",
            prompt="President John F. Kennedy, inaugural address, January 1961.")
    expect(normalise(r.text) != "", f"prompt= call returned empty text: {r.text!r}")
    return repr(r.text)


def check_stream(client: OpenAI, audio: Path, model: str) -> str:
    deltas: list[str] = []
    done: list[str] = []
    other: list[str] = []
    with audio.open("rb") as f:
        stream = client.audio.transcriptions.create(file=f, model=model, stream=True)
        for event in stream:
            kind = getattr(event, "type", None)
            if kind == "transcript.text.delta":
                expect(not done, "a transcript.text.delta event came after transcript.text.done")
                deltas.append(event.delta)
            elif kind == "transcript.text.done":
                done.append(event.text)
            else:
                other.append(str(kind))
    expect(len(done) == 1, f"expected one transcript.text.done event, got {len(done)} "
                           f"(and {len(deltas)} deltas, other events {other})")
    expect(len(deltas) > 0, "no transcript.text.delta events before transcript.text.done")
    joined = "".join(deltas)
    expect(joined == done[0], f"the deltas concatenated {joined!r} != the done text {done[0]!r}")
    expect_phrases(done[0], "stream done text")
    return f"{len(deltas)} deltas, done {done[0]!r}" + (f", other events {other}" if other else "")


def check_bad_upload(client: OpenAI, model: str) -> str:
    try:
        r = client.audio.transcriptions.create(
            file=("not-audio.wav", b"not audio", "audio/wav"), model=model)
    except openai.BadRequestError as e:
        expect(e.status_code == 400, f"status {e.status_code}")
        body = e.body if isinstance(e.body, dict) else {}
        expect(isinstance(body.get("message"), str) and body["message"] != "",
               f"the 400 body has no error.message: {e.body!r}")
        expect("type" in body, f"the 400 body's error object has no 'type': {e.body!r}")
        return f"400 {body.get('type')}: {body.get('message')!r}"
    except openai.APIStatusError as e:
        raise CheckFailed(f"expected 400 BadRequestError, got {type(e).__name__} {e.status_code}: {e.body!r}")
    raise CheckFailed(f"a non-audio upload was accepted: {r!r}")


def check_wrong_key(base_url: str, model: str) -> str:
    bad = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="wrong-key-for-the-check", max_retries=0,
                 timeout=30, http_client=no_proxy_client())
    try:
        bad.models.list()
    except openai.AuthenticationError as e:
        return f"401: {e.body!r}"
    except openai.APIStatusError as e:
        raise CheckFailed(f"a wrong key got {e.status_code}, expected 401")
    raise CheckFailed("a wrong api key was accepted by /v1/models")


def main() -> None:
    p = base_parser(__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="tiny.en", help="model id to ask for (default: tiny.en)")
    p.add_argument("--audio", type=Path, default=JFK_WAV, help="the JFK clip (default: audio-samples/jfk.wav)")
    p.add_argument("--timeout", type=float, default=180.0, help="per-request timeout in seconds (default 180)")
    args = p.parse_args()
    preflight(args.base_url, "openai_check")

    _, _, _, duration = wav_info(args.audio)
    client = OpenAI(base_url=args.base_url.rstrip("/") + "/v1", api_key=args.api_key,
                    max_retries=0, timeout=args.timeout, http_client=no_proxy_client())
    print(f"openai {openai.__version__} -> {args.base_url}/v1, model {args.model}, "
          f"{args.audio.name} ({duration:.2f} s), key phrases {list(JFK_KEY_PHRASES)}")
    c = Checks("openai_check")
    c.run("GET /v1/models", check_models, client, args.model)
    c.run("json", check_json, client, args.audio, args.model)
    c.run("verbose_json + word/segment timestamps", check_verbose, client, args.audio, args.model, duration)
    c.run("srt", check_subtitles, client, args.audio, args.model, "srt", duration)
    c.run("vtt", check_subtitles, client, args.audio, args.model, "vtt", duration)
    c.run("text", check_text, client, args.audio, args.model)
    c.run("prompt=", check_prompt, client, args.audio, args.model)
    c.run("stream=True (SSE)", check_stream, client, args.audio, args.model)
    c.run("non-audio upload -> BadRequestError 400", check_bad_upload, client, args.model)
    if args.api_key != "unused":
        c.run("wrong api key -> AuthenticationError 401", check_wrong_key, args.base_url, args.model)
    c.finish()


if __name__ == "__main__":
    main()
