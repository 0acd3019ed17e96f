#!/usr/bin/env python3
"""Check `steno serve`'s OpenAI Realtime transcription endpoint with the official `openai` package.

    tests/clients/.venv/bin/python tests/clients/realtime_check.py --base-url http://127.0.0.1:PORT [--api-key KEY]
    tests/clients/.venv/bin/python tests/clients/realtime_check.py --base-url … --measure 20 --pace 1

Connects with `client.realtime.connect(extra_query={"intent": "transcription"})` (the openai
package's realtime extra, i.e. `websockets`) and checks:
- server VAD on a two-utterance clip (audio-samples/2830-3980-0043.wav, 1.5 s of silence,
  audio-samples/1089-134686-0000.wav, 1.5 s of silence): speech_started → speech_stopped →
  committed → completed for each of two items, deltas that join to a prefix of each transcript,
  times on the audio clock, previous_item_id chaining them;
- a manual commit (`turn_detection: null`) of audio-samples/jfk.wav: one item, no VAD events, the
  JFK key phrases in its transcript;
- the beta `transcription_session.update` shape, `input_audio_buffer.clear`, and that a malformed
  event, an unknown event and an empty commit each get an `error` event (with the client's
  `event_id`) while the connection stays usable.
The audio (16 kHz WAV) is resampled to 24 kHz pcm16 here and sent in 100 ms appends at `--pace`
times real time (default 1, as a microphone; 0: as fast as possible). `--measure N` instead runs each of the two
transcriptions N times and prints the transcripts and the latency from the last audio event
(the commit; with server VAD, speech_stopped) to `.completed`: p50 and p95.
"""

from __future__ import annotations

import base64
import json
import signal
import statistics
import sys
import threading
import time
import wave
from pathlib import Path

from _common import (JFK_WAV, REALTIME_RATE, REPO, CheckFailed, Checks, base_parser, expect, missing_phrases,
                     normalise, preflight, read_24k)

try:
    import openai
    from openai import OpenAI
except ImportError:
    sys.exit("realtime_check.py: the openai package is missing; run tests/clients/provision and use "
             "tests/clients/.venv/bin/python")
try:
    import websockets  # noqa: F401  (the realtime extra)
except ImportError:
    sys.exit("realtime_check.py: websockets (openai[realtime]) is missing; run tests/clients/provision")

RATE = REALTIME_RATE
CHUNK = RATE // 10  # 100 ms
SHORT_WAV = REPO / "audio-samples" / "2830-3980-0043.wav"  # "Experience proves this." (2.0 s)
LONG_WAV = REPO / "audio-samples" / "1089-134686-0000.wav"  # "He hoped there would be stew…" (10.4 s)
GAP_S = 1.5
TAIL_S = 1.5  # silence after the second utterance, for server VAD to hear its end
KEY_WORDS = (("experience", "proves"), ("stew", "dinner", "carrots"))
DONE = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
WATCHDOG_S = 120


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * RATE))


def two_utterances() -> bytes:
    return read_24k(SHORT_WAV) + silence(GAP_S) + read_24k(LONG_WAV) + silence(TAIL_S)


class Watchdog:
    """SIGALRM after `seconds`: a blocking receive that never returns fails the check instead."""

    def __init__(self, seconds: int, what: str):
        self.seconds, self.what = seconds, what

    def __enter__(self):
        def fire(_signum, _frame):
            raise CheckFailed(f"{self.what}: no answer within {self.seconds} s")
        signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)


def connect(client: OpenAI):
    # proxy=None: the server is local, whatever *_PROXY says.
    return client.realtime.connect(extra_query={"intent": "transcription"},
                                   websocket_connection_options={"proxy": None})


def send_audio(conn, pcm: bytes, pace: float) -> None:
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), 2 * CHUNK)):
        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[offset:offset + 2 * CHUNK]).decode())
        if pace > 0:
            delay = start + (i + 1) * 0.1 / pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def session_update(conn, turn_detection) -> None:
    conn.session.update(session={"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": turn_detection}}})


def expect_event(conn, kind: str, what: str):
    """The next event, which must be of `kind`."""
    ev = conn.recv()
    expect(ev.type == kind, f"{what}: expected {kind}, got {ev.type}: {ev}")
    return ev


def until_completed(conn, n: int) -> tuple[list, dict[str, float]]:
    """Events until `n` items completed; and the arrival time of each event type's last one."""
    events, seen, done = [], {}, 0
    while done < n:
        ev = conn.recv()
        events.append(ev)
        seen[ev.type] = time.monotonic()
        expect(ev.type != "error", f"error event: {ev}")
        done += ev.type == DONE
    return events, seen


def items_of(events: list) -> dict[str, dict]:
    """Per item: its events' types in order, joined deltas, transcript, times."""
    items: dict[str, dict] = {}
    for ev in events:
        item_id = getattr(ev, "item_id", None)
        if not item_id:
            continue
        it = items.setdefault(item_id, {"types": [], "deltas": "", "transcript": None})
        it["types"].append(ev.type.rsplit(".", 1)[-1])
        if ev.type == DELTA:
            it["deltas"] += ev.delta or ""
        elif ev.type == DONE:
            it["transcript"] = ev.transcript
            it["usage"] = ev.usage
        elif ev.type == "input_audio_buffer.speech_started":
            it["start_ms"] = ev.audio_start_ms
        elif ev.type == "input_audio_buffer.speech_stopped":
            it["end_ms"] = ev.audio_end_ms
        elif ev.type == "input_audio_buffer.committed":
            it["previous"] = ev.previous_item_id
    return items


def expect_append_only(item_id: str, it: dict) -> None:
    expect(it["transcript"] is not None, f"{item_id}: no completed event")
    expect(it["transcript"].startswith(it["deltas"]),
           f"{item_id}: deltas {it['deltas']!r} are not a prefix of the transcript {it['transcript']!r}")


def run_server_vad(client: OpenAI, pace: float) -> dict[str, dict]:
    """The two-utterance clip with server VAD; its items."""
    with connect(client) as conn:
        created = expect_event(conn, "session.created", "connect")
        expect(created.session.type == "transcription", f"session.created: {created.session}")
        session_update(conn, {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                              "silence_duration_ms": 500})
        updated = expect_event(conn, "session.updated", "session.update")
        td = updated.session.audio.input.turn_detection
        expect(td is not None and td.type == "server_vad" and td.silence_duration_ms == 500,
               f"session.updated turn_detection: {td}")
        send_audio(conn, two_utterances(), pace)
        events, _ = until_completed(conn, 2)
    return items_of(events)


def check_server_vad(client: OpenAI, pace: float) -> str:
    items = run_server_vad(client, pace)
    expect(len(items) == 2, f"expected 2 items, got {len(items)}: {items}")
    previous = None
    for (item_id, it), words in zip(items.items(), KEY_WORDS):
        expect(it["types"][:1] == ["speech_started"] and it["types"][-1] == "completed",
               f"{item_id}: events {it['types']}")
        order = [t for t in it["types"] if t != "delta"]
        expect(order == ["speech_started", "speech_stopped", "committed", "completed"],
               f"{item_id}: events {it['types']}")
        expect_append_only(item_id, it)
        text = normalise(it["transcript"])
        expect(all(w in text.split() for w in words), f"{item_id}: {it['transcript']!r} lacks {words}")
        expect(0 <= it["start_ms"] < it["end_ms"], f"{item_id}: times {it.get('start_ms')}–{it.get('end_ms')}")
        expect(it["previous"] == previous, f"{item_id}: previous_item_id {it['previous']!r}, expected {previous!r}")
        previous = item_id
    starts = [it["start_ms"] for it in items.values()]
    gap_ms = (wav_seconds(SHORT_WAV) + GAP_S) * 1000
    expect(abs(starts[1] - gap_ms) < 700, f"second item starts at {starts[1]} ms, expected about {gap_ms:.0f}")
    return " | ".join(repr(it["transcript"]) for it in items.values())


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def run_manual(client: OpenAI, pace: float) -> tuple[dict[str, dict], list, float]:
    """jfk.wav with turn_detection null and one commit; items, events, commit → completed (s)."""
    with connect(client) as conn:
        expect_event(conn, "session.created", "connect")
        session_update(conn, None)
        updated = expect_event(conn, "session.updated", "session.update")
        expect(updated.session.audio.input.turn_detection is None,
               f"turn_detection not null: {updated.session.audio.input.turn_detection}")
        send_audio(conn, read_24k(JFK_WAV), pace)
        conn.input_audio_buffer.commit()
        committed_at = time.monotonic()
        events, seen = until_completed(conn, 1)
    return items_of(events), events, seen[DONE] - committed_at


def check_manual(client: OpenAI, pace: float) -> str:
    items, events, latency = run_manual(client, pace)
    kinds = {ev.type for ev in events}
    expect(not kinds & {"input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"},
           f"VAD events with turn_detection null: {sorted(kinds)}")
    expect(len(items) == 1, f"expected 1 item, got {items}")
    (item_id, it), = items.items()
    order = [t for t in it["types"] if t != "delta"]
    expect(order == ["committed", "completed"], f"{item_id}: events {it['types']}")
    expect_append_only(item_id, it)
    missing = missing_phrases(it["transcript"])
    expect(not missing, f"transcript lacks {missing}: {it['transcript']!r}")
    expect(abs(it["usage"].seconds - wav_seconds(JFK_WAV)) < 0.2, f"usage {it['usage']}")
    return f"{it['transcript']!r} ({latency * 1000:.0f} ms after the commit)"


def check_protocol(client: OpenAI) -> str:
    with connect(client) as conn, Watchdog(60, "protocol"):
        expect_event(conn, "session.created", "connect")
        conn.send_raw("{not json")
        ev = expect_event(conn, "error", "malformed JSON")
        expect(ev.error.type == "invalid_request_error", f"error: {ev.error}")
        conn.send_raw(json.dumps({"type": "response.create", "event_id": "evt_unknown"}))
        ev = expect_event(conn, "error", "an unknown event")
        expect(ev.error.event_id == "evt_unknown" and ev.error.param == "type", f"error: {ev.error}")
        conn.send_raw(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_empty"}))
        ev = expect_event(conn, "error", "an empty commit")
        expect(ev.error.code == "input_audio_buffer_commit_empty" and ev.error.event_id == "evt_empty",
               f"error: {ev.error}")
        # The beta shape, answered in kind.
        conn.send_raw(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": None}}))
        ev = conn.recv()
        expect(ev.type == "transcription_session.updated", f"beta update answered with {ev.type}")
        raw = ev.model_dump() if hasattr(ev, "model_dump") else dict(ev)
        expect(raw["session"]["turn_detection"] is None and raw["session"]["input_audio_format"] == "pcm16",
               f"transcription_session.updated: {raw}")
        # Clear drops the buffer: a commit after it is empty.
        send_audio(conn, read_24k(SHORT_WAV), 0)
        conn.input_audio_buffer.clear()
        expect_event(conn, "input_audio_buffer.cleared", "clear")
        conn.input_audio_buffer.commit()
        ev = expect_event(conn, "error", "a commit after clear")
        expect(ev.error.code == "input_audio_buffer_commit_empty", f"error: {ev.error}")
        # Still usable: a real turn goes through.
        send_audio(conn, read_24k(SHORT_WAV), 0)
        conn.input_audio_buffer.commit()
        events, _ = until_completed(conn, 1)
        done = [ev for ev in events if ev.type == DONE]
        expect("experience" in normalise(done[0].transcript), f"after the errors: {done[0].transcript!r}")
    return f"4 errors, then {done[0].transcript!r}"


def check_wrong_intent(base_url: str, api_key: str) -> str:
    client = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key, max_retries=0)
    try:
        with client.realtime.connect(extra_query={"intent": "conversation"}) as conn:
            conn.recv()
    except Exception as e:  # websockets' InvalidStatus: the server answered 400 before upgrading
        expect("400" in str(e), f"expected HTTP 400, got {type(e).__name__}: {e}")
        return "400"
    raise CheckFailed("a conversation intent was accepted")


def measure(client: OpenAI, runs: int, pace: float) -> None:
    def summary(values: list[float]) -> str:
        values = sorted(values)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        return f"p50 {statistics.median(values) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, n={len(values)}"

    manual, vad, speech_end, texts = [], [], [], set()
    for _ in range(runs):
        with Watchdog(WATCHDOG_S, "manual run"):
            items, _, latency = run_manual(client, pace)
        manual.append(latency)
        texts.add("manual jfk.wav: " + next(iter(items.values()))["transcript"])
    for _ in range(runs):
        with Watchdog(WATCHDOG_S, "server VAD run"):
            with connect(client) as conn:
                expect_event(conn, "session.created", "connect")
                session_update(conn, {"type": "server_vad"})
                expect_event(conn, "session.updated", "session.update")
                # Events are read (and timed) on a thread while the audio is sent at `pace`.
                stamped: list = []

                def receive() -> None:
                    done = 0
                    while done < 2:
                        ev = conn.recv()
                        stamped.append((time.monotonic(), ev))
                        done += ev.type == DONE

                reader = threading.Thread(target=receive, daemon=True)
                reader.start()
                sent_from = time.monotonic()
                send_audio(conn, two_utterances(), pace)
                reader.join(WATCHDOG_S)
                expect(not reader.is_alive(), "server VAD run: no second completed event")
        stops = [(t, ev) for t, ev in stamped if ev.type == "input_audio_buffer.speech_stopped"]
        done_at = [t for t, ev in stamped if ev.type == DONE][-1]
        stop_at, stop = stops[-1]
        vad.append(done_at - stop_at)
        # The sample at audio_end_ms went out at sent_from + audio_end_ms (paced audio).
        if pace > 0:
            speech_end.append(done_at - (sent_from + stop.audio_end_ms / 1000 / pace))
        texts.add("server VAD two-utterance clip: " + " | ".join(
            it["transcript"] for it in items_of([ev for _, ev in stamped]).values()))
    for t in sorted(texts):
        print(t)
    print(f"manual commit -> completed ({runs} runs, pace {pace}): {summary(manual)}")
    print(f"server VAD speech_stopped -> completed, second item ({runs} runs, pace {pace}): {summary(vad)}")
    if speech_end:
        print(f"server VAD audio_end_ms sent -> completed (includes silence_duration_ms), second item: "
              f"{summary(speech_end)}")


def main() -> None:
    p = base_parser(__doc__.strip().splitlines()[0])
    p.add_argument("--pace", type=float, default=1.0,
                   help="audio speed as a multiple of real time, as a microphone (default 1; 0: as fast "
                        "as possible)")
    p.add_argument("--measure", type=int, default=0, metavar="N",
                   help="instead of the checks, time N runs of each transcription and print p50/p95")
    args = p.parse_args()
    preflight(args.base_url, "realtime_check")
    client = OpenAI(base_url=args.base_url.rstrip("/") + "/v1", api_key=args.api_key, max_retries=0)
    print(f"openai {openai.__version__}, websockets {websockets.__version__} -> "
          f"{args.base_url}/v1/realtime?intent=transcription, pace {args.pace}")
    if args.measure:
        measure(client, args.measure, args.pace)
        return
    c = Checks("realtime_check")
    with Watchdog(WATCHDOG_S, "server VAD"):
        c.run("server VAD: two utterances -> two items, append-only deltas", check_server_vad, client, args.pace)
    with Watchdog(WATCHDOG_S, "manual commit"):
        c.run("turn_detection null + commit: jfk.wav -> one item", check_manual, client, args.pace)
    c.run("errors keep the connection; beta shape; clear", check_protocol, client)
    with Watchdog(30, "wrong intent"):
        c.run("intent other than transcription -> HTTP 400", check_wrong_intent, args.base_url, args.api_key)
    c.finish()


if __name__ == "__main__":
    main()
