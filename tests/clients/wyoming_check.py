#!/usr/bin/env python3
"""Check `steno serve --wyoming`'s Wyoming server (Home Assistant's protocol) with the `wyoming`
package's own client (AsyncTcpClient, the one Home Assistant uses).

    tests/clients/.venv/bin/python tests/clients/wyoming_check.py --base-url http://127.0.0.1:PORT \
        --wyoming 127.0.0.1:WPORT [--pace 1.0]
    tests/clients/.venv/bin/python tests/clients/wyoming_check.py --base-url … --wyoming … --runs 20

Checks, each on its own connection (one request per connection, as Home Assistant makes them):
describe → info (one ASR program with the model, `en` among its languages,
supports_transcript_streaming); plain use as Home Assistant does it (transcribe, audio-start,
jfk.wav in 1024-sample chunks as fast as possible, audio-stop, read until `transcript`: the JFK
key phrases); streaming use (jfk.wav at --pace × real time: transcript-start first, at least one
transcript-chunk before audio-stop was sent, the chunks join to exactly the transcript, then
transcript-stop and the server closes); a two-utterance clip (2830-3980-0043 + 1.5 s of silence +
1089-134686-0000) sent as 44.1 kHz stereo 32-bit (converted by wyoming's AudioChunkConverter) with
both utterances in the transcript and chunks for both; jfk.wav as 22.05 kHz unsigned 8-bit; no
audio → an empty transcript; ping → pong; and bad input (a header that is not JSON, a payload over
the limit, an audio-start of width 7, a chunk of half a frame, audio-start twice) → an `error`
event with its code and that connection closed, while a connection opened before stays served and
a new request after them is answered. Prints one line per check; exits 1 on any mismatch.

With --runs N it checks nothing and prints JSON instead: for jfk.wav and the two-utterance clip
(--clips), sent at --pace × real time (16 kHz mono s16, 1024-sample chunks) and followed by
--tail-silence seconds of silence, the transcripts and the time from sending audio-stop (the last
audio event) to receiving `transcript` over N runs (p50, p95, min, max, in ms).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import wave
from pathlib import Path

from _common import (JFK_WAV, REPO, CheckFailed, Checks, base_parser, expect, missing_phrases, normalise,
                     preflight)

try:
    from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
    from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.info import Describe, Info
    from wyoming.ping import Ping, Pong
except ImportError:
    sys.exit("wyoming_check.py: the wyoming package is missing; run tests/clients/provision and use "
             "tests/clients/.venv/bin/python")

SAMPLES_PER_CHUNK = 1024
READ_TIMEOUT_S = 60.0
SHORT = REPO / "audio-samples" / "2830-3980-0043.wav"   # "Experience proves this."
LONG = REPO / "audio-samples" / "1089-134686-0000.wav"  # "He hoped there would be stew for dinner, …"
SILENCE_S = 1.5


class Audio:
    """Interleaved PCM and its format."""

    def __init__(self, pcm: bytes, rate: int, width: int, channels: int):
        self.pcm, self.rate, self.width, self.channels = pcm, rate, width, channels

    @property
    def duration(self) -> float:
        return len(self.pcm) / (self.rate * self.width * self.channels)

    def chunks(self, samples: int = SAMPLES_PER_CHUNK) -> list[AudioChunk]:
        step = samples * self.width * self.channels
        return [AudioChunk(rate=self.rate, width=self.width, channels=self.channels, audio=self.pcm[i:i + step])
                for i in range(0, len(self.pcm), step)]

    def converted(self, rate: int, width: int, channels: int) -> "Audio":
        """Through wyoming's own AudioChunkConverter (audioop's ratecv, lin2lin, tostereo)."""
        chunk = AudioChunk(rate=self.rate, width=self.width, channels=self.channels, audio=self.pcm)
        out = AudioChunkConverter(rate=rate, width=width, channels=channels).convert(chunk)
        return Audio(out.audio, out.rate, out.width, out.channels)


def load_wav(path: Path) -> Audio:
    with wave.open(str(path), "rb") as w:
        return Audio(w.readframes(w.getnframes()), w.getframerate(), w.getsampwidth(), w.getnchannels())


def two_utterances() -> Audio:
    """2830-3980-0043, 1.5 s of silence, 1089-134686-0000 (all 16 kHz mono s16)."""
    a, b = load_wav(SHORT), load_wav(LONG)
    assert (a.rate, a.width, a.channels) == (b.rate, b.width, b.channels) == (16000, 2, 1)
    return Audio(a.pcm + bytes(int(SILENCE_S * 16000) * 2) + b.pcm, 16000, 2, 1)


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


async def read(client: AsyncTcpClient) -> Event | None:
    return await asyncio.wait_for(client.read_event(), timeout=READ_TIMEOUT_S)


async def transcribe(addr: str, audio: Audio, pace: float, language: str | None = "en") -> dict:
    """One request: audio sent at `pace` × real time (0: as fast as possible) while the events are
    read. Returns every event with its arrival time (s since the start), when audio-stop was
    sent, and whether the server closed after the last event."""
    host, port = host_port(addr)
    chunks = audio.chunks()
    events: list[tuple[float, Event]] = []
    sent = {"stop": None}
    async with AsyncTcpClient(host, port) as client:
        t0 = time.monotonic()

        async def sender():
            await client.write_event(Transcribe(language=language).event())
            await client.write_event(AudioStart(rate=audio.rate, width=audio.width, channels=audio.channels).event())
            for k, chunk in enumerate(chunks):
                if pace > 0:
                    delay = t0 + k * SAMPLES_PER_CHUNK / audio.rate / pace - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            sent["stop"] = time.monotonic() - t0

        send_task = asyncio.create_task(sender())
        closed = False
        try:
            while True:
                event = await read(client)
                if event is None:
                    closed = True
                    break
                events.append((time.monotonic() - t0, event))
                if Error.is_type(event.type) or TranscriptStop.is_type(event.type):
                    # After the last event the server must close: the next read is the end.
                    closed = await read(client) is None
                    break
        finally:
            await send_task
    return {"events": events, "stop_s": sent["stop"], "closed": closed, "duration": audio.duration}


def transcript_of(result: dict) -> tuple[str, float]:
    for t, event in result["events"]:
        if Transcript.is_type(event.type):
            return Transcript.from_event(event).text, t
    types = [e.type for _, e in result["events"]]
    errors = [Error.from_event(e).text for _, e in result["events"] if Error.is_type(e.type)]
    raise CheckFailed(f"no transcript event; got {types} {errors}")


def check_stream_shape(result: dict, paced: bool) -> tuple[str, list[str]]:
    """transcript-start first, chunks, transcript, transcript-stop, close; the chunks join to the
    transcript (each one appended: every partial join is a prefix of it)."""
    events = [e for _, e in result["events"]]
    types = [e.type for e in events]
    expect(types and TranscriptStart.is_type(types[0]), f"the first event is not transcript-start: {types[:3]}")
    expect(types[-2:] == ["transcript", "transcript-stop"], f"the last events are not transcript, "
                                                              f"transcript-stop: {types[-3:]}")
    middle = set(types[1:-2])
    expect(middle <= {"transcript-chunk"}, f"unexpected events between start and transcript: {middle}")
    expect(result["closed"], "the server did not close the connection after transcript-stop")
    text, _ = transcript_of(result)
    chunks = [TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type)]
    expect(chunks, "no transcript-chunk event")
    joined = ""
    for c in chunks:
        joined += c
        expect(text.startswith(joined), f"chunks so far {joined!r} are not a prefix of the transcript {text!r}")
    expect(joined == text, f"the chunks join to {joined!r}, not the transcript {text!r}")
    if paced:
        early = [t for t, e in result["events"] if TranscriptChunk.is_type(e.type) and t < result["stop_s"]]
        expect(early, f"no transcript-chunk before audio-stop was sent ({result['stop_s']:.2f} s)")
    return text, chunks


def check_describe(addr: str) -> str:
    async def run():
        host, port = host_port(addr)
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Describe().event())
            event = await read(client)
            expect(event is not None and Info.is_type(event.type), f"describe answered {event}")
            return Info.from_event(event)
    info = asyncio.run(run())
    expect(len(info.asr) == 1, f"{len(info.asr)} ASR programs, expected 1")
    program = info.asr[0]
    expect(program.installed and program.supports_transcript_streaming,
           f"program {program.name}: installed {program.installed}, streaming {program.supports_transcript_streaming}")
    expect(len(program.models) == 1 and "en" in program.models[0].languages,
           f"models {[(m.name, m.languages[:5]) for m in program.models]}")
    expect(not (info.tts or info.wake or info.handle or info.intent), "info lists non-ASR programs")
    return f"{program.name} {program.version}: model {program.models[0].name} ({len(program.models[0].languages)} languages)"


def check_plain(addr: str) -> str:
    """Home Assistant's way: everything sent, then read until `transcript`, ignoring the rest."""
    async def run():
        host, port = host_port(addr)
        audio = load_wav(JFK_WAV)
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=audio.rate, width=audio.width, channels=audio.channels).event())
            for chunk in audio.chunks():
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            while (event := await read(client)) is not None:
                if Transcript.is_type(event.type):
                    return Transcript.from_event(event)
                expect(not Error.is_type(event.type), f"error event: {event.data}")
        raise CheckFailed("the connection closed without a transcript")
    t = asyncio.run(run())
    missing = missing_phrases(t.text)
    expect(not missing, f"transcript lacks {missing}: {t.text!r}")
    expect(t.language in (None, "en"), f"language {t.language!r}")
    return repr(t.text)


def check_streaming(addr: str, pace: float) -> str:
    r = asyncio.run(transcribe(addr, load_wav(JFK_WAV), pace))
    text, chunks = check_stream_shape(r, paced=pace > 0)
    missing = missing_phrases(text)
    expect(not missing, f"transcript lacks {missing}: {text!r}")
    _, t = transcript_of(r)
    return f"{len(chunks)} chunks {chunks}; transcript {(t - r['stop_s']) * 1000:.0f} ms after audio-stop"


def check_two_utterances(addr: str, pace: float) -> str:
    audio = two_utterances().converted(44100, 4, 2)
    r = asyncio.run(transcribe(addr, audio, pace))
    text, chunks = check_stream_shape(r, paced=pace > 0)
    norm = normalise(text)
    for phrase in ("experience proves this", "stew for dinner", "turnips and carrots"):
        expect(phrase in norm, f"transcript lacks {phrase!r}: {text!r}")
    expect(len(chunks) >= 2 and "stew" not in normalise(chunks[0]),
           f"the first utterance's text should come in chunks of its own: {chunks}")
    return f"44.1 kHz stereo 32-bit: {text!r} in {len(chunks)} chunks"


def check_eight_bit(addr: str) -> str:
    # Resampled at 16 bits first: audioop's ratecv reads 8-bit samples as signed, and wyoming's
    # converter makes them unsigned (WAV's way, and the protocol's) before resampling.
    audio = load_wav(JFK_WAV).converted(22050, 2, 1).converted(22050, 1, 1)
    r = asyncio.run(transcribe(addr, audio, 0))
    text, _ = check_stream_shape(r, paced=False)
    # 8 bits leave about 30 dB of SNR: tiny.en then hears "fellow America asked not" even from
    # `steno transcribe` on the same samples, so only the later phrases are asked for.
    missing = missing_phrases(text, ("what your country can do for you", "ask what you can do for your country"))
    expect(not missing, f"transcript lacks {missing}: {text!r}")
    return f"22.05 kHz unsigned 8-bit: {text!r}"


def check_no_audio(addr: str) -> str:
    r = asyncio.run(transcribe(addr, Audio(b"", 16000, 2, 1), 0))
    text, _ = transcript_of(r)
    expect(text == "", f"transcript of no audio is {text!r}")
    expect(r["closed"], "no close after the empty transcript")
    return "empty transcript, then close"


def check_ping(addr: str) -> str:
    async def run():
        host, port = host_port(addr)
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Ping(text="hello").event())
            return await read(client)
    event = asyncio.run(run())
    expect(event is not None and Pong.is_type(event.type), f"ping answered {event}")
    expect(Pong.from_event(event).text == "hello", f"pong {event.data}")
    return "pong hello"


async def bad_request(addr: str, raw: bytes | None = None, events: list[Event] = ()) -> tuple[Error, bool]:
    host, port = host_port(addr)
    async with AsyncTcpClient(host, port) as client:
        for e in events:
            await client.write_event(e)
        if raw is not None:
            client._writer.write(raw)
            await client._writer.drain()
        event = await read(client)
        while event is not None and TranscriptStart.is_type(event.type):  # a good audio-start's answer
            event = await read(client)
        expect(event is not None and Error.is_type(event.type), f"expected an error event, got {event}")
        closed = await read(client) is None
        return Error.from_event(event), closed


def check_bad_events(addr: str) -> str:
    async def run():
        host, port = host_port(addr)
        seen = []
        async with AsyncTcpClient(host, port) as bystander:
            await bystander.write_event(Describe().event())
            first = await read(bystander)
            expect(first is not None and Info.is_type(first.type), f"describe answered {first}")
            cases = [
                ("a header that is not JSON", {"raw": b"this is not json\n"}, "bad_frame"),
                ("a payload over the limit", {"raw": b'{"type":"audio-chunk","payload_length":99999999}\n'},
                 "too_large"),
                ("audio-start of width 7", {"events": [Transcribe().event(),
                                                        AudioStart(rate=16000, width=7, channels=1).event()]},
                 "bad_audio"),
                ("a chunk of half a frame", {"events": [
                    AudioStart(rate=16000, width=2, channels=2).event(),
                    AudioChunk(rate=16000, width=2, channels=2, audio=bytes(6)).event()]}, "bad_audio"),
                ("audio-start twice", {"events": [AudioStart(rate=16000, width=2, channels=1).event()] * 2},
                 "out_of_order"),
            ]
            for name, kwargs, code in cases:
                error, closed = await bad_request(addr, **kwargs)
                expect(error.code == code, f"{name}: error code {error.code!r} ({error.text}), expected {code!r}")
                expect(closed, f"{name}: the connection stayed open after the error")
                seen.append(f"{name} → {error.code}")
            # The connection opened before is still served.
            await bystander.write_event(Describe().event())
            again = await read(bystander)
            expect(again is not None and Info.is_type(again.type), f"the other connection's describe got {again}")
        r = await transcribe(addr, load_wav(SHORT), 0)
        text, _ = transcript_of(r)
        expect("experience" in normalise(text), f"a new request after the errors: {text!r}")
        return "; ".join(seen) + f"; then {text!r}"
    return asyncio.run(run())


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def bench(args) -> None:
    clips = {"jfk": load_wav(JFK_WAV), "two_utterances": two_utterances()}
    clips = {name: clips[name] for name in args.clips.split(",")}
    out = {"pace": args.pace, "runs": args.runs, "samples_per_chunk": SAMPLES_PER_CHUNK,
           "tail_silence_s": args.tail_silence, "clips": {}}
    for name, audio in clips.items():
        # Home Assistant's VAD sends audio-stop some silence after the speech ends.
        tail = bytes(int(args.tail_silence * audio.rate) * audio.width * audio.channels)
        audio = Audio(audio.pcm + tail, audio.rate, audio.width, audio.channels)
        latencies, texts = [], set()
        for _ in range(args.runs):
            r = asyncio.run(transcribe(args.wyoming, audio, args.pace))
            text, t = transcript_of(r)
            texts.add(text)
            latencies.append((t - r["stop_s"]) * 1000)
        out["clips"][name] = {
            "duration_s": round(audio.duration, 2),
            "transcripts": sorted(texts),
            "stop_to_transcript_ms": {
                "p50": round(statistics.median(latencies), 1), "p95": round(percentile(latencies, 0.95), 1),
                "min": round(min(latencies), 1), "max": round(max(latencies), 1),
            },
        }
        print(f"{name}: {out['clips'][name]}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


def main() -> None:
    p = base_parser("Check steno serve's Wyoming server with the wyoming package's client.")
    p.add_argument("--wyoming", required=True, help="the Wyoming address, host:port")
    p.add_argument("--pace", type=float, default=1.0,
                   help="streaming checks send audio at this × real time (0: as fast as possible; default 1)")
    p.add_argument("--runs", type=int, default=0, help="benchmark: N runs per clip, JSON out, no checks")
    p.add_argument("--clips", default="jfk,two_utterances", help="benchmark: which clips (default: both)")
    p.add_argument("--tail-silence", type=float, default=0.0,
                   help="benchmark: seconds of silence after each clip, before audio-stop (default 0)")
    args = p.parse_args()
    preflight(args.base_url, "wyoming_check")
    if args.runs > 0:
        bench(args)
        return
    c = Checks("wyoming_check")
    c.run("describe → info", check_describe, args.wyoming)
    c.run("plain transcription of jfk.wav (Home Assistant's way)", check_plain, args.wyoming)
    c.run(f"streaming jfk.wav at {args.pace or 'max'} × real time", check_streaming, args.wyoming, args.pace)
    c.run("two utterances as 44.1 kHz stereo 32-bit", check_two_utterances, args.wyoming, args.pace * 2)
    c.run("jfk.wav as 8-bit", check_eight_bit, args.wyoming)
    c.run("no audio", check_no_audio, args.wyoming)
    c.run("ping", check_ping, args.wyoming)
    c.run("bad events get an error and close that connection alone", check_bad_events, args.wyoming)
    c.finish()


if __name__ == "__main__":
    main()
