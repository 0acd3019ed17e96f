#!/usr/bin/env python3
"""Check `steno serve`'s graceful shutdown: SIGTERM in the middle of a live stream.

    tests/clients/.venv/bin/python tests/clients/shutdown_check.py --base-url http://127.0.0.1:PORT \
        --pid SERVER_PID

Streams audio-samples/jfk.wav at real-time pace to /v1/stream and, at the same time, to an
OpenAI Realtime transcription session (/v1/realtime, server VAD); after 4.5 s (mid-sentence,
"...ask not what your country...") it sends SIGTERM to the server and stops sending audio
(no `end`, no commit). Checks: /health answers 503 `shutting_down` during the drain (when the
server is still up to answer); the stream still gets its finals, with the words heard up to
the signal ("and so", "ask not"), the last one flushed by the shutdown (reason end_of_input),
then the socket closes with 1001 (going away); the Realtime session heard two turns, the one in progress
at the signal is committed and transcribed (a `.completed` transcript for it), then the
session closes with 1001; a new stream is refused meanwhile or the port is closed. Prints the events; exits 1
on any mismatch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

from _common import (JFK_WAV, REALTIME_RATE, CheckFailed, Checks, base_parser, expect, normalise, preflight, read_24k,
                     read_pcm16_mono, ws_url)

try:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
except ImportError:
    sys.exit("shutdown_check.py: the websockets package is missing; run tests/clients/provision")

CHUNK_S = 0.1
SIGNAL_AFTER_S = 4.5


def health(base_url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


async def read_realtime(rt, events: list) -> None:
    """Collect a Realtime session's events until the server closes it."""
    try:
        async for message in rt:
            events.append(json.loads(message))
    except ConnectionClosed:
        pass


async def run(args, checks: Checks) -> None:
    pcm, rate = read_pcm16_mono(JFK_WAV)
    chunk = int(rate * CHUNK_S) * 2
    pcm_24k = read_24k(JFK_WAV)
    chunk_24k = int(REALTIME_RATE * CHUNK_S) * 2
    events = []
    rt_events: list = []
    async with connect(ws_url(args.base_url, "/v1/stream")) as ws, \
            connect(ws_url(args.base_url, "/v1/realtime?intent=transcription")) as rt:
        await ws.send(json.dumps({"type": "config", "sample_rate": rate, "encoding": "pcm_s16le"}))
        ready = json.loads(await ws.recv())
        expect(ready.get("type") == "ready", f"first event is ready: {ready}")
        rt_reader = asyncio.create_task(read_realtime(rt, rt_events))
        t0 = time.monotonic()
        sent = 0
        while sent * CHUNK_S < SIGNAL_AFTER_S:
            await ws.send(pcm[sent * chunk:(sent + 1) * chunk])
            audio = base64.b64encode(pcm_24k[sent * chunk_24k:(sent + 1) * chunk_24k]).decode()
            await rt.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            sent += 1
            await asyncio.sleep(max(0.0, t0 + sent * CHUNK_S - time.monotonic()))
        os.kill(args.pid, signal.SIGTERM)
        signalled = time.monotonic()
        status, body = await asyncio.to_thread(health, args.base_url)
        print(f"/health during the drain: {status} {body}")
        checks.check(status in (0, 503), f"/health is 503 while draining (got {status})")
        if status == 503:
            checks.check("shutting_down" in body, f"/health says shutting_down: {body}")
        try:
            async with connect(ws_url(args.base_url, "/v1/stream")) as late:
                await late.send(json.dumps({"type": "config", "sample_rate": rate, "encoding": "pcm_s16le"}))
                first = json.loads(await late.recv())
                checks.check(first.get("type") == "error", f"a new stream is refused: {first}")
        except (InvalidStatus, OSError, ConnectionClosed) as e:
            print(f"new stream refused: {type(e).__name__}: {e}")
        try:
            async for message in ws:
                event = json.loads(message)
                events.append(event)
                print(json.dumps(event))
        except ConnectionClosed:
            pass
        code = ws.close_code
        print(f"closed with {code} {ws.close_reason!r} {time.monotonic() - signalled:.2f} s after SIGTERM")
        await asyncio.wait_for(rt_reader, timeout=30)
        rt_code = rt.close_code
        print(f"realtime session closed with {rt_code} {rt.close_reason!r}")
    finals = [e for e in events if e.get("type") == "final"]
    checks.check(len(finals) >= 1, f"a final after SIGTERM ({len(finals)})")
    text = normalise(" ".join(f.get("text", "") for f in finals))
    # The words around the signal (how well they are recognised under load is not the point).
    checks.check("and so" in text and "ask not" in text, f"the finals hold what was heard up to the signal: {text!r}")
    last = finals[-1] if finals else {}
    checks.check(last.get("reason") == "end_of_input", f"the last final was flushed by the shutdown: {last.get('reason')}")
    checks.check(code == 1001, f"close code 1001 (got {code})")
    for event in rt_events:
        if event.get("type") != "conversation.item.input_audio_transcription.delta":
            print("realtime:", json.dumps(event))
    completed = [e for e in rt_events if e.get("type") == "conversation.item.input_audio_transcription.completed"]
    started = [e["item_id"] for e in rt_events if e.get("type") == "input_audio_buffer.speech_started"]
    # Two turns: "And so my fellow Americans" ended before the signal; "ask not…" was in
    # progress, and the shutdown must commit and transcribe it. (Which words a loaded machine
    # hears is not the point here: the text only has to be there.)
    texts = {e.get("item_id"): normalise(e.get("transcript", "")) for e in completed}
    checks.check(len(started) >= 2, f"the Realtime session heard two turns before the signal: {started}")
    checks.check(bool(started) and bool(texts.get(started[-1])),
                 f"the Realtime turn in progress at the signal was committed and transcribed: {texts}")
    checks.check(bool(started) and "and so" in texts.get(started[0], ""),
                 f"the first Realtime turn's transcript: {texts}")
    errors = [e for e in rt_events if e.get("type") == "error"]
    checks.check(not errors, f"no Realtime error events: {errors}")
    checks.check(rt_code == 1001, f"Realtime close code 1001 (got {rt_code})")


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    args = parser.parse_args()
    preflight(args.base_url, "shutdown_check.py")
    checks = Checks("shutdown_check.py")
    try:
        asyncio.run(run(args, checks))
    except CheckFailed as e:
        checks.check(False, str(e))
    checks.finish()


if __name__ == "__main__":
    main()
