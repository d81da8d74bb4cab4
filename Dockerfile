# promote serve, as an image: docs/operations.md.
#   docker build -t promote .
#   docker run -p 8080:8080 -v promote-state:/var/lib/promote -v $PWD/pipelines:/etc/promote/pipelines:ro promote
# Build stage: the Rust toolchain; runtime stage: Debian slim with only what `promote serve`
# needs (git for the signing helpers, openssh-client for ssh remotes, ca-certificates).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin promote && strip target/release/promote

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 promote \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/promote --create-home --shell /usr/sbin/nologin promote \
    && mkdir -p /etc/promote/pipelines
COPY --from=build /src/target/release/promote /usr/local/bin/promote
USER 10001:10001
WORKDIR /var/lib/promote
# The state (`.promote/state.db` here, unless PROMOTE_DATABASE_URL names a database), the key
# (`.config/promote/key`, unless PROMOTE_KEY_FILE) and the git caches.
ENV HOME=/var/lib/promote
VOLUME ["/var/lib/promote"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["promote", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["promote"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--pipelines", "/etc/promote/pipelines"]
