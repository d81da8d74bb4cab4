# promote serve, as an image: docs/operations.md.
#   docker build -t promote .            (or scripts/image.sh: podman, no registry needed)
#   docker run -p 8080:8080 -v promote-state:/var/lib/promote -v $PWD/pipelines:/etc/promote/pipelines:ro promote
# Build stage: the Rust toolchain; runtime stage: Debian slim with only what `promote serve`
# needs (git for the signing helpers, openssh-client for ssh remotes, ca-certificates).
#
# Build arguments: RUST_IMAGE and BASE_IMAGE name the two stages' images (scripts/image.sh gives
# the ones it makes from Debian's packages); JOBS caps cargo's parallel jobs. The registry and
# target/ are cache mounts, kept by the engine between builds: a rebuild compiles only what
# changed.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG JOBS=
# A CA bundle for cargo to verify crates.io with, when the build's network goes through a proxy
# with its own CA (scripts/image.sh mounts the host's there); empty: the image's own bundle.
ARG CARGO_CAINFO=
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=promote-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=promote-target,target=/src/target \
    ${CARGO_CAINFO:+env CARGO_HTTP_CAINFO=$CARGO_CAINFO} cargo build --release --locked --bin promote ${JOBS:+--jobs $JOBS} \
    && strip -o /promote target/release/promote

FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 promote \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/promote --create-home --shell /usr/sbin/nologin promote \
    && mkdir -p /etc/promote/pipelines
COPY --from=build /promote /usr/local/bin/promote
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
