# One image for the four processes (recsys-ingest, recsys-updater,
# recsys-serving, recsys-trainer; plus recsys-loadtest). docker-compose.kafka.yml
# picks the process with `command:`.
#
#   docker build -t recsys .
#   docker run --rm recsys recsys-serving --help

# ---- toolchain ----------------------------------------------------------------
# The Rust release of rust-toolchain.toml (e2e/tests/toolchain.rs fails when
# they differ or when Cargo.lock pins a crate that needs a newer Rust). The
# toolchain file itself is not copied in: the image's default toolchain is
# that release, and the file would make rustup fetch rustfmt and clippy.
FROM rust:1.95.0-bookworm AS chef
# librdkafka is built from source by rdkafka-sys (cmake); zlib/zstd/lz4 for
# its compression codecs.
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# ---- plan: the dependency recipe --------------------------------------------
# recipe.json holds the manifests and the lock only, so it (and every layer
# built from it) changes when a dependency changes, not when a source does.
FROM chef AS plan
COPY Cargo.toml Cargo.lock ./
COPY schemas schemas
COPY common common
COPY model model
COPY batch-trainer batch-trainer
COPY datagen datagen
COPY ingest ingest
COPY updater updater
COPY serving serving
COPY tracking tracking
COPY e2e e2e
COPY fuzz fuzz
COPY testkit testkit
RUN cargo chef prepare --recipe-path recipe.json

# ---- build ------------------------------------------------------------------
FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
# Every dependency of the shipped binaries, librdkafka included, in a layer
# keyed by the recipe: a source change starts below this line.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        --bin recsys-ingest --bin recsys-updater --bin recsys-serving \
        --bin recsys-trainer --bin recsys-loadtest
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY schemas schemas
COPY common common
COPY model model
COPY batch-trainer batch-trainer
COPY datagen datagen
COPY ingest ingest
COPY updater updater
COPY serving serving
COPY tracking tracking
COPY e2e e2e
COPY fuzz fuzz
COPY testkit testkit
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
