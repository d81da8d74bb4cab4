# Multi-stage build of the promote binary.
#   docker build -t promote .
#   docker run --rm -v "$PWD:/work" -w /work promote validate pipelines/
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that they are cached while only the sources change.
COPY Cargo.toml Cargo.lock ./
# Every [[bench]] of Cargo.toml needs a file for the manifest to parse: a stub each.
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in $(grep -A1 '^\[\[bench\]\]' Cargo.toml | sed -n 's/^name = "\(.*\)"/\1/p'); do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin promote

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/promote /usr/local/bin/promote
COPY pipelines /usr/share/promote/pipelines
ENTRYPOINT ["promote"]
CMD ["--help"]
