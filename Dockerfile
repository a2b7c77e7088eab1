# One image for the four processes (recsys-ingest, recsys-updater,
# recsys-serving, recsys-trainer; plus recsys-loadtest). docker-compose.kafka.yml
# picks the process with `command:`.
#
#   docker build -t recsys .
#   docker run --rm recsys recsys-serving --help

# ---- build ------------------------------------------------------------------
FROM rust:1.85-bookworm AS build
# librdkafka is built from source by rdkafka-sys (cmake); zlib/zstd/lz4 for
# its compression codecs.
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild them: fetch with the
# lock file only.
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY schemas schemas
COPY common common
COPY model model
COPY batch-trainer batch-trainer
COPY ingest ingest
COPY updater updater
COPY serving serving
COPY tracking tracking
COPY e2e e2e
COPY fuzz fuzz
RUN cargo build --release --locked \
        --bin recsys-ingest --bin recsys-updater --bin recsys-serving \
        --bin recsys-trainer --bin recsys-loadtest \
    && mkdir -p /out \
    && cp target/release/recsys-ingest target/release/recsys-updater target/release/recsys-serving \
          target/release/recsys-trainer target/release/recsys-loadtest /out/

# ---- run --------------------------------------------------------------------
FROM debian:bookworm-slim
# curl: the compose health checks; ca-certificates: the trainer's webhook.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/recsys recsys \
    && mkdir -p /var/lib/recsys/models /etc/recsys \
    && chown -R recsys /var/lib/recsys
COPY --from=build /out/ /usr/local/bin/
COPY configs/recsys.toml /etc/recsys/recsys.toml
WORKDIR /var/lib/recsys
USER recsys
# Every process reads this file, then RECSYS__SECTION__KEY overrides.
ENV RECSYS_CONFIG=/etc/recsys/recsys.toml \
    RECSYS__MODEL__ARTIFACTS_DIR=/var/lib/recsys/models
CMD ["recsys-serving", "--help"]
