#!/usr/bin/env python3
"""Check `steno serve`'s live WebSocket endpoint /v1/stream with the `websockets` package.

    tests/clients/.venv/bin/python tests/clients/ws_check.py --base-url http://127.0.0.1:PORT \
        [--api-key KEY] [--pace 1.0] [--encoding pcm_s16le|f32le] [--key-in-query]

Streams audio-samples/jfk.wav in 100 ms chunks (chunk k is sent at t0 + k*0.1/pace s; --pace 0
sends as fast as possible), then {"type":"end"}, and collects the events until the server closes.
With --ping-after-end the client pings every 20 ms from `end` until the close.
Checks: close code 1000; at least one partial (when paced); one or more finals with strictly
increasing utterance ids; the finals' text holds the JFK key phrases; within an utterance each
partial's committed text extends the previous one and the final starts with the last committed
text; final times ordered and inside the audio (+0.5 s); a stats event after the last final with
audio_s = the clip's length and (when paced at real time or slower) no dropped samples; no error
events. Prints the events and one line per check; exits 1 on any mismatch.
"""

from __future__ import annotations

import array
import asyncio
import json
import sys
import time
from pathlib import Path

from _common import (JFK_WAV, CheckFailed, Checks, base_parser, expect, missing_phrases, preflight,
                     read_pcm16_mono, ws_url)

try:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
except ImportError:
    sys.exit("ws_check.py: the websockets package is missing; run tests/clients/provision and use "
             "tests/clients/.venv/bin/python")

CHUNK_S = 0.1
SLACK_S = 0.5


async def run_stream(args) -> dict:
    pcm, rate = read_pcm16_mono(args.audio)
    duration = len(pcm) / 2 / rate
    if args.encoding == "f32le":
        samples = array.array("h", pcm)
        if sys.byteorder != "little":
            samples.byteswap()
        floats = array.array("f", (s / 32768.0 for s in samples))
        if sys.byteorder != "little":
            floats.byteswap()
        audio, width = floats.tobytes(), 4
    else:
        audio, width = pcm, 2
    chunk_bytes = int(rate * CHUNK_S) * width
    chunks = [audio[i:i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]

    url = ws_url(args.base_url, "/v1/stream")
    headers = {}
    if args.key_in_query:
        url += f"?api_key={args.api_key}"
    else:
        headers["Authorization"] = f"Bearer {args.api_key}"
    config = {"type": "config", "sample_rate": rate, "encoding": args.encoding}
    if args.language:
        config["language"] = args.language
    print(f"ws_check: {url} config {json.dumps(config)}, {args.audio.name} {duration:.2f} s in "
          f"{len(chunks)} chunks of {CHUNK_S * 1000:.0f} ms, pace {args.pace or 'max'}", flush=True)

    events: list[tuple[float, dict]] = []
    result = {"duration": duration, "events": events, "close_code": None, "close_reason": None,
              "ready": None, "max_send_lag_s": 0.0, "send_error": None}
    try:
        ws = await connect(url, additional_headers=headers, proxy=None, open_timeout=30, max_size=2**24)
    except InvalidStatus as e:
        raise CheckFailed(f"the WebSocket upgrade was refused: HTTP {e.response.status_code} "
                          f"{e.response.body[:200]!r}")
    async with ws:
        try:
            await ws.send(json.dumps(config))
            raw = await asyncio.wait_for(ws.recv(), timeout=60)
        except ConnectionClosed:
            raise CheckFailed(f"the server closed before the ready event: code {ws.close_code} "
                              f"{ws.close_reason!r} (1013 = at --max-streams)")
        except asyncio.TimeoutError:
            raise CheckFailed("no ready event within 60 s of the config")
        expect(isinstance(raw, str), f"the first message is binary, expected the ready event: {raw[:40]!r}")
        ready = json.loads(raw)
        result["ready"] = ready
        print(f"  <- {raw}", flush=True)
        expect(ready.get("type") == "ready", f"the first event is not ready: {ready}")
        expect(ready.get("sample_rate") == rate and ready.get("encoding") == args.encoding,
               f"ready event does not echo the config: {ready}")
        t0 = time.monotonic()

        async def sender():
            ended = False
            try:
                for k, chunk in enumerate(chunks):
                    if args.pace > 0:
                        due = t0 + k * CHUNK_S / args.pace
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        result["max_send_lag_s"] = max(result["max_send_lag_s"], time.monotonic() - due)
                    await ws.send(chunk)
                await ws.send(json.dumps({"type": "end"}))
                ended = True
                # Keep-alive pings while the server flushes (websockets sends one every 20 s by
                # default): the server must answer them and still close with 1000. A server
                # that stops reading after `end` leaves them unread, and closing its socket
                # over unread data resets the connection (the client sees 1006).
                while args.ping_after_end:
                    await ws.ping()
                    await asyncio.sleep(0.02)
            except ConnectionClosed as e:
                # After `end` the close is expected (the receiver checks its code).
                if not ended:
                    result["send_error"] = f"the server closed while audio was being sent: {e}"

        send_task = asyncio.create_task(sender())
        deadline = duration / (args.pace or 100) + args.timeout
        try:
            while True:
                left = t0 + deadline - time.monotonic()
                if left <= 0:
                    raise CheckFailed(f"no close from the server {deadline:.0f} s after the start")
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=left)
                except ConnectionClosed:
                    break
                except asyncio.TimeoutError:
                    continue
                now = time.monotonic() - t0
                if isinstance(raw, bytes):
                    events.append((now, {"type": "<binary>", "bytes": len(raw)}))
                    print(f"  {now:6.2f}s <- binary message of {len(raw)} bytes", flush=True)
                    continue
                ev = json.loads(raw)
                events.append((now, ev))
                if ev.get("type") != "partial" or args.verbose:
                    print(f"  {now:6.2f}s <- {raw}", flush=True)
                else:
                    print(f"  {now:6.2f}s <- partial u{ev.get('utterance')} committed={ev.get('committed')!r} "
                          f"tentative={ev.get('tentative')!r}", flush=True)
        finally:
            send_task.cancel()
            await asyncio.gather(send_task, return_exceptions=True)
        result["close_code"], result["close_reason"] = ws.close_code, ws.close_reason
    return result


def check_all(args) -> None:
    c = Checks("ws_check")
    r = c.run("stream jfk.wav and collect the events until close", lambda: asyncio.run(run_stream(args)))
    if r is None:
        c.finish()
    duration = r["duration"]
    events = [ev for _, ev in r["events"]]
    partials = [ev for ev in events if ev.get("type") == "partial"]
    finals = [ev for ev in events if ev.get("type") == "final"]
    stats = [ev for ev in events if ev.get("type") == "stats"]
    errors = [ev for ev in events if ev.get("type") == "error"]
    warnings = [ev for ev in events if ev.get("type") == "warning"]
    known = {"partial", "final", "stats", "error", "warning"}
    print(f"ws_check: {len(partials)} partials, {len(finals)} finals, {len(stats)} stats, "
          f"{len(warnings)} warnings, {len(errors)} errors; close {r['close_code']} {r['close_reason']!r}; "
          f"max client send lag {r['max_send_lag_s'] * 1000:.0f} ms", flush=True)

    def close_1000():
        expect(r["send_error"] is None, r["send_error"] or "")
        expect(r["close_code"] == 1000, f"close code {r['close_code']} ({r['close_reason']!r}), expected 1000")
        return f"1000 {r['close_reason']!r}"

    def no_errors():
        expect(not errors, f"error events: {errors}")
        unknown = [ev for ev in events if ev.get("type") not in known]
        expect(not unknown, f"events of unknown type: {unknown[:3]}")
        for ev in events:
            expect(isinstance(ev.get("wall_ms"), (int, float)) or ev.get("type") in ("error", "warning"),
                   f"{ev.get('type')} event without a numeric wall_ms: {ev}")
        return f"warnings {[w.get('message') for w in warnings]}" if warnings else ""

    def partials_present():
        if args.pace > 0:
            expect(len(partials) >= 1, "no partial event while streaming at a real-time pace")
        return f"{len(partials)} partials"

    def finals_order():
        expect(len(finals) >= 1, "no final event")
        ids = [f.get("utterance") for f in finals]
        expect(all(isinstance(i, int) for i in ids), f"final utterance ids are not integers: {ids}")
        expect(all(a < b for a, b in zip(ids, ids[1:])), f"final utterance ids not strictly increasing: {ids}")
        return f"utterances {ids}"

    def finals_text():
        text = " ".join(str(f.get("text", "")) for f in finals)
        missing = missing_phrases(text)
        expect(not missing, f"the finals lack {missing}: {text!r}")
        return repr(text)

    def committed_grows():
        last_committed: dict[int, str] = {}
        finalised: set[int] = set()
        for ev in events:
            u = ev.get("utterance")
            if ev.get("type") == "partial":
                expect(u not in finalised, f"a partial for utterance {u} came after its final: {ev}")
                committed = str(ev.get("committed", ""))
                prev = last_committed.get(u, "")
                expect(committed.strip().startswith(prev.strip()),
                       f"utterance {u}: committed text shrank or changed: {prev!r} -> {committed!r}")
                last_committed[u] = committed
            elif ev.get("type") == "final":
                finalised.add(u)
                prev = last_committed.get(u, "")
                text = str(ev.get("text", ""))
                expect(text.strip().startswith(prev.strip()),
                       f"utterance {u}: the final {text!r} does not start with the last committed text {prev!r}")
        return f"{len(last_committed)} utterances with partials"

    def final_times():
        prev_start = prev_end = 0.0
        for f in finals:
            s, e = f.get("start"), f.get("end")
            expect(isinstance(s, (int, float)) and isinstance(e, (int, float)),
                   f"final u{f.get('utterance')} without numeric start/end: {f}")
            expect(0.0 <= s <= e <= duration + SLACK_S,
                   f"final u{f.get('utterance')} times [{s}, {e}] not within 0..{duration + SLACK_S:.2f} s")
            expect(s >= prev_start and e >= prev_end,
                   f"final u{f.get('utterance')} times [{s}, {e}] go back from [{prev_start}, {prev_end}]")
            prev_start, prev_end = s, e
        return ", ".join(f"u{f['utterance']} [{f['start']:.2f}, {f['end']:.2f}]" for f in finals)

    def stats_last():
        expect(len(stats) >= 1, "no stats event")
        st = stats[-1]
        last_final = max(i for i, ev in enumerate(events) if ev.get("type") == "final") if finals else -1
        expect(events.index(st) > last_final, "the stats event came before the last final")
        audio_s = st.get("audio_s")
        expect(isinstance(audio_s, (int, float)) and abs(audio_s - duration) <= 0.15,
               f"stats audio_s {audio_s} != the {duration:.2f} s sent")
        for key in ("wall_s", "real_time_factor", "mean_decode_ms", "partial_jobs", "final_jobs", "dropped_samples"):
            expect(key in st, f"stats lacks {key!r}: {st}")
        if 0 < args.pace <= 1.0 and not args.allow_drops:
            expect(st.get("dropped_samples") == 0,
                   f"{st.get('dropped_samples')} samples dropped at a real-time pace (--allow-drops to accept)")
        return (f"audio_s {audio_s}, rtf {st.get('real_time_factor')}, dropped {st.get('dropped_samples')}, "
                f"partial_jobs {st.get('partial_jobs')}, final_jobs {st.get('final_jobs')}")

    c.run("close code 1000 after end", close_1000)
    c.run("no error events, known event types", no_errors)
    c.run("at least one partial", partials_present)
    c.run("finals with strictly increasing utterance ids", finals_order)
    c.run("finals hold the JFK key phrases", finals_text)
    c.run("committed text only grows; finals extend it", committed_grows)
    c.run("final times ordered, within the audio", final_times)
    c.run("stats after the last final", stats_last)
    c.finish()


def main() -> None:
    p = base_parser(__doc__.strip().splitlines()[0])
    p.add_argument("--pace", type=float, default=1.0,
                   help="speed relative to real time (default 1.0; 2 = twice as fast; 0 = as fast as possible)")
    p.add_argument("--encoding", choices=("pcm_s16le", "f32le"), default="pcm_s16le",
                   help="sample encoding to send (default pcm_s16le; f32le converts the clip)")
    p.add_argument("--language", default=None, help="optional language in the config event")
    p.add_argument("--key-in-query", action="store_true",
                   help="send the key as ?api_key= instead of an Authorization header")
    p.add_argument("--allow-drops", action="store_true",
                   help="accept dropped_samples > 0 at a real-time pace")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait past the audio's send time for the close (default 120)")
    p.add_argument("--audio", type=Path, default=JFK_WAV,
                   help="16-bit mono WAV holding the JFK clip (default: audio-samples/jfk.wav)")
    p.add_argument("--ping-after-end", action="store_true",
                   help="after end, ping every 20 ms until the server closes (it must still close with 1000)")
    p.add_argument("-v", "--verbose", action="store_true", help="print partial events in full")
    args = p.parse_args()
    preflight(args.base_url, "ws_check")
    if args.pace < 0:
        p.error("--pace must be >= 0")
    check_all(args)


if __name__ == "__main__":
    main()
