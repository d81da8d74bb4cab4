#!/usr/bin/env bash
# Runs the image scripts/image.sh built (localhost/promote:dev, or IMAGE) as a user would, and
# fails, never skips, when podman cannot run it or it does not behave:
#   - it runs as a user other than root;
#   - `promote serve` answers /healthz and /readyz on the published port;
#   - `podman healthcheck run` (the image's HEALTHCHECK, `promote probe`) passes;
#   - the state and the key are made on its volume, and another container reads that state;
#   - its log has no terminal colours;
#   - SIGTERM (`podman stop`) stops it cleanly: exit 0, well before podman's SIGKILL.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-localhost/promote:dev}
name=promote-check-$$
volume=promote-check-$$
started=$SECONDS

say() { printf 'image-check: %s\n' "$*" >&2; }
cleanup() {
    podman rm -f "$name" >/dev/null 2>&1 || true
    podman volume rm -f "$volume" >/dev/null 2>&1 || true
}
die() {
    printf 'image-check: FAILED: %s\n' "$*" >&2
    if podman container exists "$name" 2>/dev/null; then
        printf -- '--- podman logs %s\n' "$name" >&2
        podman logs "$name" >&2 2>&1 | tail -n 40 || true
    fi
    cleanup
    exit 1
}
trap cleanup EXIT

command -v podman >/dev/null || die "podman is missing (apt-get install podman ...; scripts/image.sh)"
command -v python3 >/dev/null || die "python3 is missing (it asks the HTTP questions)"
podman info >/dev/null 2>&1 || die "podman cannot run here: $(podman info 2>&1 | tail -n 3)"
podman image exists "$image" || die "no image $image: run scripts/image.sh first"

# podman without systemd says "unable to get systemd connection" about healthcheck timers: known
# and harmless here (DEPENDENCIES.md), so not repeated in the log; every other line is kept.
pm() { podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

# GET URL -> prints the status code (000 when nothing answers).
get() {
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman volume create "$volume" >/dev/null
# No systemd here to run the HEALTHCHECK on its interval: no timer (`podman healthcheck run`
# below runs it once, as podman would).
pm run -d --name "$name" --health-interval=disable \
    -p "127.0.0.1:$port:8080" \
    -v "$volume:/var/lib/promote" \
    -v "$PWD/pipelines:/etc/promote/pipelines:ro" \
    -e PROMOTE_LOG=info \
    "$image" >/dev/null || die "podman run failed"

# Not root.
uid=$(podman exec "$name" id -u) || die "podman exec failed"
[ "$uid" != 0 ] || die "the container runs as root"
say "runs as uid $uid"

# /healthz, then /readyz.
deadline=$((SECONDS + 60))
until [ "$(get "http://127.0.0.1:$port/healthz")" = 200 ]; do
    [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || die "the container stopped before /healthz answered"
    [ $SECONDS -lt $deadline ] || die "/healthz did not answer 200 within 60 s"
    sleep 0.5
done
say "/healthz 200 after $((SECONDS - started)) s"
ready=$(get "http://127.0.0.1:$port/readyz")
[ "$ready" = 200 ] || die "/readyz answered $ready"
say "/readyz 200"

# The image's HEALTHCHECK, run by podman (no systemd here to run it on its interval).
podman healthcheck run "$name" >/dev/null 2>&1 || die "podman healthcheck run: unhealthy ($(podman healthcheck run "$name" 2>&1 | tail -n 1))"
status=$(podman inspect -f '{{.State.Health.Status}}' "$name" 2>/dev/null || podman inspect -f '{{.State.Healthcheck.Status}}' "$name")
[ "$status" = healthy ] || die "health status is $status after podman healthcheck run"
say "podman healthcheck run: $status"

# The state and the key on the volume, the process's own.
podman exec "$name" test -s /var/lib/promote/.promote/state.db || die "no state at /var/lib/promote/.promote/state.db"
key_mode=$(podman exec "$name" stat -c '%a %u' /var/lib/promote/.config/promote/key) || die "no key on the volume"
[ "$key_mode" = "600 $uid" ] || die "the key is mode/owner $key_mode, not 600 $uid"
say "state and key (600) on the volume"

# SIGTERM: a clean stop, exit 0, before podman's SIGKILL 20 s later.
stop_start=$SECONDS
pm stop -t 20 "$name" >/dev/null || die "podman stop failed"
took=$((SECONDS - stop_start))
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || die "exit code $code after SIGTERM"
[ "$took" -lt 20 ] || die "SIGTERM did not stop it: podman killed it after ${took} s"
podman logs "$name" 2>&1 | grep -q 'promote serve: stopping' || die "the log does not say it stopped"
if podman logs "$name" 2>&1 | grep -q $'\x1b\['; then die "the log carries terminal colours"; fi
say "SIGTERM: exit 0 in ${took} s"

# Another container finds the state the first one made on the volume.
out=$(pm run --rm --no-healthcheck -v "$volume:/var/lib/promote" "$image" status --json) || die "status on the volume failed: $out"
[ "$out" = '{
  "items": []
}' ] || die "status on the volume said: $out"
say "the state outlives the container"

say "passed in $((SECONDS - started)) s"
