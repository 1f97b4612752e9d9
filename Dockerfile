# geogate image: built in the official Rust image, run in debian:bookworm-slim
# as a non-root user. See docs/deploying.md ("The image").
#
#   docker build -t geogate:dev .
#   docker run --rm -p 6432:6432 -p 9187:9187 \
#     -v "$PWD/geogate.toml:/etc/geogate/geogate.toml:ro" \
#     -e GEOGATE_GATEWAY_PASSWORD -e APP_DB_PASSWORD -e REPORTING_DB_PASSWORD geogate:dev
#
# The config must set `proxy.metrics_listen` (the health check probes
# /healthz on port 9187; set GEOGATE_HEALTH_PORT if yours differs) and, for
# clients outside the container, `proxy.listen = "0.0.0.0:6432"`.

# --- build ---------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /build

# Dependency layer: compile every dependency against stub sources, so that a
# change to geogate's own code rebuilds only geogate. This layer is rebuilt
# only when Cargo.toml, Cargo.lock or benches/ change. cargo reads every
# target the manifest declares before building any: the [[bench]] in
# Cargo.toml needs benches/ here, and a new explicit [[bin]], [[test]] or
# build.rs would need its file copied (or stubbed) too. tests/demo.rs
# replays these steps on exactly the files copied here, so a missing one
# fails `cargo test` rather than `docker build`.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin geogate \
 && rm -rf src

# geogate itself. The stubs' build outputs are newer than the copied sources
# (COPY keeps the files' modification times), so touch the crate roots to
# make cargo rebuild geogate instead of shipping the stub. The release
# profile (Cargo.toml) leaves out debug info, so the binary needs no
# stripping here.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin geogate

# --- run -----------------------------------------------------------------------
# bookworm-slim rather than distroless: the HEALTHCHECK needs a command inside
# the image, and geogate has no client mode for its own /healthz. bash (in
# bookworm-slim, no extra package) speaks enough HTTP over /dev/tcp; the same
# bash lets an operator send SIGHUP with `docker exec ... kill -HUP 1`. Same
# Debian release as the build image, so the glibc the binary links matches.
FROM debian:bookworm-slim

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 geogate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin geogate \
 && mkdir -p /etc/geogate

COPY --from=build /build/target/release/geogate /usr/local/bin/geogate

USER 10001:10001
# 6432: PostgreSQL wire (proxy.listen); 9187: /metrics /healthz /readyz (proxy.metrics_listen).
EXPOSE 6432 9187

# Liveness of the process: /healthz answers 200 while geogate runs. (Readiness,
# /readyz, also waits for the tenant cache and the local gateway; orchestrators
# probe it themselves.) No curl in the image: bash's /dev/tcp sends the request
# and `read` takes the status from "HTTP/1.1 200 OK".
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${GEOGATE_HEALTH_PORT:-9187} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 2 _ status _ <&3 && [ \"$status\" = 200 ]"]

# geogate runs as PID 1: it handles SIGTERM (drain), SIGINT and SIGHUP
# (reload) itself and starts no child processes, so no init is needed.
ENTRYPOINT ["geogate"]
CMD ["serve", "--config", "/etc/geogate/geogate.toml"]
