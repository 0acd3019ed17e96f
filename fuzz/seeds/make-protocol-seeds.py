#!/usr/bin/env python3
"""Writes the seeds of the `wyoming` and `realtime` fuzz targets (run from fuzz/seeds/)."""
import base64
import json
import math
import struct


def frame(kind, data=None, payload=b""):
    """A Wyoming event as the wyoming package writes it: header line, data blob, payload."""
    header = {"type": kind, "version": "1.10.2"}
    blob = b""
    if data:
        blob = json.dumps(data).encode()
        header["data_length"] = len(blob)
    if payload:
        header["payload_length"] = len(payload)
    return (json.dumps(header) + "\n").encode() + blob + payload


pcm = b"".join(struct.pack("<h", int(8000 * math.sin(i * 0.05))) for i in range(800))
fmt = {"rate": 16000, "width": 2, "channels": 1}
wyoming = {
    "describe.bin": frame("describe"),
    "transcribe-stream.bin": frame("transcribe", {"language": "en"}) + frame("audio-start", fmt)
    + frame("audio-chunk", fmt, pcm) + frame("audio-stop"),
    "stereo-8bit.bin": frame("audio-chunk", {"rate": 8000, "width": 1, "channels": 2}, bytes(range(256)) * 2)
    + frame("audio-stop"),
    "ping.bin": frame("ping", {"text": "hi"}),
}
for name, stream in wyoming.items():
    # The target's prefix: 3 piece sizes (bytes 5, 0x40, 2), then the stream.
    with open(f"wyoming/{name}", "wb") as f:
        f.write(b"\x03\x05\x40\x02" + stream)

pcm24 = b"".join(struct.pack("<h", int(8000 * math.sin(i * 0.05))) for i in range(480))
realtime = {
    "session-ga.json": {"type": "session.update", "event_id": "e1", "session": {
        "type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500}}}}},
    "session-beta.json": {"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1", "prompt": "hello"},
        "turn_detection": None}},
    "append.json": {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24).decode()},
    "commit.json": {"type": "input_audio_buffer.commit", "event_id": "c1"},
    "clear.json": {"type": "input_audio_buffer.clear"},
}
for name, event in realtime.items():
    with open(f"realtime/{name}", "w") as f:
        f.write(json.dumps(event))
