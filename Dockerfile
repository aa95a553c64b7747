# syntax=docker/dockerfile:1
# All the pipeline's binaries in one image; the command picks the service:
#   docker run … gaming-pipeline s3-connector
# Each binary runs as PID 1 in exec form, so SIGTERM reaches it directly and it
# flushes, checkpoints and releases its leases within SHUTDOWN_DEADLINE_SECS (25 s;
# ECS stopTimeout is 30 s).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/s3-connector target/release/redshift-connector \
       target/release/cron-connector target/release/player-state-worker \
       target/release/pipelinectl /out/

FROM debian:bookworm-slim
# CA certificates for TLS to AWS and to a Redshift endpoint; nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin pipeline
COPY --from=build /out/ /usr/local/bin/
# The services write nothing to disk: the root filesystem can be read-only.
USER 10001:10001
ENV LOG_FORMAT=json \
    HEALTH_ADDR=0.0.0.0:8080
EXPOSE 8080
# Liveness (/healthz), not readiness: a service may wait minutes for a cold warehouse.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/pipelinectl", "healthcheck"]
CMD ["s3-connector"]
