#!/usr/bin/env bash
# Regenerates fuzz/seeds/audio_bytes/ from audio-samples/jfk.wav (see README.md).
# Needs ffmpeg 5.1 and sox 14.4 (Debian 12: apt-get install ffmpeg sox). Run from the repository root.
set -euo pipefail
src=audio-samples/jfk.wav
out=fuzz/seeds/audio_bytes
cut=(-ss 0.5 -t 0.3)          # 0.3 s of speech ("And so my fellow...")
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "${cut[@]}" -i "$src" -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$@"; }
mkdir -p "$out"
ff -ac 1 -ar 16000 -c:a pcm_s16le        "$out/pcm_s16_16k_mono.wav"
ff -ac 1 -ar 8000  -c:a pcm_s24le        "$out/pcm_s24_8k_mono.wav"
ff -ac 1 -ar 8000  -c:a pcm_f32le        "$out/pcm_f32_8k_mono.wav"
ff -ac 1 -ar 16000 -c:a pcm_u8           "$out/pcm_u8_16k_mono.wav"
ff -ac 2 -ar 8000  -c:a pcm_s16le        "$out/pcm_s16_8k_stereo.wav"
ff -ac 1 -ar 8000  -c:a pcm_mulaw        "$out/mulaw_8k_mono.wav"
# ffmpeg's FLAC muxer adds an 8 KB padding block; libFLAC through sox writes none.
tmp=$(mktemp --suffix=.wav)
ff -ac 1 -ar 16000 -c:a pcm_s16le "$tmp"
sox "$tmp" "$out/flac_16k_mono.flac"
rm -f "$tmp"
ff -ac 1 -ar 16000 -c:a libmp3lame -b:a 32k "$out/mp3_16k_mono.mp3"
ff -ac 1 -ar 16000 -c:a libvorbis -q:a 0 "$out/vorbis_16k_mono.ogg"
ff -ac 1 -ar 16000 -c:a libopus -b:a 16k "$out/opus_16k_mono.opus"
ff -ac 1 -ar 16000 -c:a aac -b:a 24k     "$out/aac_16k_mono.m4a"
ff -ac 1 -ar 8000  -c:a alac             "$out/alac_8k_mono.m4a"
ff -ac 1 -ar 8000  -c:a pcm_s16be        "$out/pcm_s16be_8k_mono.aiff"
ls -l "$out"
