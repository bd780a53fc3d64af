# syntax=docker/dockerfile:1
# The taskstream image: one binary, every worker (`taskstream run WORKER`).
#   docker build -t taskstream .
# Linted by hadolint in `cargo test` (workers/tests/deploy.rs); building the
# image is not tested on the development machines (no container engine there).

ARG RUST_VERSION=1.85
ARG DEBIAN_RELEASE=bookworm

# --- build: librdkafka is compiled from source by rdkafka-sys (make, a C/C++
# toolchain, OpenSSL and zlib headers); the binary links OpenSSL and zlib.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# Versions come from the pinned Debian release of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make g++ pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p taskstream --bin taskstream \
    && cp target/release/taskstream /usr/local/bin/taskstream

# --- runtime: Debian slim with OpenSSL and the CA store (TLS to Kafka, Redis,
# PostgreSQL, SMTP, webhooks); zlib is in the base image.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 taskstream \
    && useradd --system --uid 10001 --gid taskstream --no-create-home \
       --home-dir /var/lib/taskstream --shell /usr/sbin/nologin taskstream \
    && install -d -o taskstream -g taskstream /var/lib/taskstream
COPY --from=build /usr/local/bin/taskstream /usr/local/bin/taskstream
# Runs as a non-root user with a read-only root filesystem: relative paths of
# the config (audit.dir, reminders.mail_dir) resolve under the working
# directory, which Kubernetes mounts as an emptyDir.
USER 10001:10001
WORKDIR /var/lib/taskstream
ENV TASKSTREAM_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/taskstream"]
CMD ["run", "all"]
