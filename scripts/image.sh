#!/usr/bin/env bash
# Builds the image of ./Dockerfile with podman, tagged localhost/promote:dev, on a Debian machine
# that reaches no image registry (docs/operations.md, "The image"):
#
#   1. podman's configuration for this kind of machine (runtime runc, ulimits within the hard
#      limits), written where podman reads it for every later command too;
#   2. the base image localhost/debian:bookworm-slim, made from Debian's packages by debootstrap
#      (minbase) from the mirror apt is configured with; kept between runs;
#   3. the toolchain image localhost/rust:1.96-bookworm, that base plus bookworm-security's
#      rustc-web and cargo-web and what a Rust build needs; kept between runs;
#   4. `podman build --pull=never --format docker` of the Dockerfile with that toolchain.
#
# Environment: IMAGE (default localhost/promote:dev), CARGO_BUILD_JOBS (default: every core),
# REBUILD_BASE=1 to make the base and toolchain images again.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-localhost/promote:dev}
base=localhost/debian:bookworm-slim
toolchain=localhost/rust:1.96-bookworm
jobs=${CARGO_BUILD_JOBS:-$(nproc)}

say() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

command -v podman >/dev/null || die "podman is missing (apt-get install podman buildah runc conmon netavark aardvark-dns slirp4netns uidmap debootstrap)"

# --- 1. podman's configuration -------------------------------------------------------------
# crun refuses this kernel's hybrid cgroup layout: runc. Without CAP_SYS_RESOURCE podman's default
# nofile of 1048576 fails ("setrlimit ... Operation not permitted"): the hard limits instead. A
# drop-in (containers.conf.d) leaves any containers.conf of the machine as it is.
if [ "$(id -u)" = 0 ]; then
    conf_dir=/etc/containers/containers.conf.d
else
    conf_dir=${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf.d
fi
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo "$nproc")
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
mkdir -p "$conf_dir"
conf="$conf_dir/50-promote.conf"
want=$(cat <<EOF
# Written by promote's scripts/image.sh: what podman needs on this kind of machine.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    printf '%s\n' "$want" > "$conf"
    say "wrote $conf (runtime runc, nofile=$nofile, nproc=$nproc)"
fi
# A CONTAINERS_CONF of the caller would hide the drop-in: say so rather than build differently.
[ -z "${CONTAINERS_CONF:-}" ] || say "note: CONTAINERS_CONF=$CONTAINERS_CONF is set; podman reads it instead of $conf"
podman info >/dev/null 2>&1 || die "podman cannot run here: $(podman info 2>&1 | tail -n 3)"

# --- 2. the base image -----------------------------------------------------------------------
# The mirrors apt uses: deb822 (sources.list.d/*.sources) or one-line (sources.list, *.list).
mirror_for() { # SUITE -> the URI of the first enabled entry that lists it
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            function flush() { if (uri != "" && hit && types ~ /(^| )deb( |$)/ && enabled != "no") { print uri; exit } uri=""; hit=0; types=""; enabled="" }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:" { types = substr($0, index($0, ":") + 1) }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) hit = 1 }
            END { flush() }' "$f"
    done | head -n 1 | grep . && return 0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -E 's/\[[^]]*\]//' "$f" | awk -v want="$suite" '$1 == "deb" && $3 == want { print $2; exit }'
    done | head -n 1 | grep .
}
if [ "${REBUILD_BASE:-0}" = 1 ]; then
    podman image rm -f "$image" "$toolchain" "$base" >/dev/null 2>&1 || true
fi
if podman image exists "$base"; then
    say "$base: kept from an earlier run"
else
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    mirror=$(mirror_for bookworm) || die "no bookworm mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    security=$(mirror_for bookworm-security) || security=http://deb.debian.org/debian-security
    mirror=${mirror%/}
    security=${security%/}
    say "$base: debootstrap --variant=minbase bookworm from $mirror"
    started=$SECONDS
    rootfs=$(mktemp -d /var/tmp/promote-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
    rm -f "$rootfs.log"
    # As debian:bookworm-slim: the release, its updates and its security updates; no package lists
    # or downloaded packages kept.
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -c . \
        | podman import --change 'CMD ["bash"]' - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    say "$base: made in $((SECONDS - started)) s"
fi

# --- 3. the toolchain image --------------------------------------------------------------------
if podman image exists "$toolchain"; then
    say "$toolchain: kept from an earlier run"
else
    say "$toolchain: $base + bookworm-security's rustc-web and cargo-web"
    started=$SECONDS
    # The same layout as the official rust images: cargo's home (and its registry) in /usr/local/cargo.
    podman build --pull=never --format docker -t "$toolchain" -f - . <<EOF
FROM $base
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
       rustc-web cargo-web gcc libc6-dev make perl pkg-config git ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
EOF
    say "$toolchain: made in $((SECONDS - started)) s"
fi

# The toolchain must satisfy Cargo.toml's rust-version (the lowest Rust promote builds with).
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$need" ] || die "Cargo.toml has no rust-version"
have=$(podman run --rm --pull=never "$toolchain" rustc --version | awk '{print $2}')
lowest=$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)
[ "$lowest" = "$need" ] || die "$toolchain has Rust $have; Cargo.toml's rust-version asks for $need"
say "$toolchain: Rust $have (rust-version $need)"

# --- 4. the image ----------------------------------------------------------------------------
# cargo verifies crates.io's certificate with the toolchain image's CA bundle; where the host's
# differs (a proxy's own CA), the host's is the one that works here. It is mounted beside, not
# over, the image's own bundle (a mount applies to every RUN, and the runtime stage's
# ca-certificates package must be free to write its own) and named to cargo by CARGO_CAINFO.
mounts=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/run/promote-host-ca.crt:ro --build-arg CARGO_CAINFO=/run/promote-host-ca.crt)
fi
say "$image: podman build (cargo build --release -j $jobs)"
started=$SECONDS
podman build --pull=never --format docker \
    --build-arg RUST_IMAGE="$toolchain" \
    --build-arg BASE_IMAGE="$base" \
    --build-arg JOBS="$jobs" \
    "${mounts[@]}" \
    -t "$image" -f Dockerfile .
say "$image: built in $((SECONDS - started)) s"
