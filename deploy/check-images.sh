#!/usr/bin/env bash
# Builds the three images of deploy/docker/ without a Docker daemon, then runs them: a coordinator
# from its image, a CPU agent and a GPU agent (its tch build on libtorch's CPU side) from theirs
# complete the smoke sweep, submitted by the CPU agent image's own `ndhtl submit`. For machines
# with no Docker engine and no access to container registries (this project's development and CI
# machines).
#
#   sudo apt-get install -y buildah debootstrap
#   sudo deploy/check-images.sh            # 40–60 minutes on 2 cores, 60 GB of disk
#   NDHTL_IMAGES="coordinator agent-cpu" sudo deploy/check-images.sh   # without the GPU image
# (NDHTL_IMAGES lists the images to build; the run always uses the coordinator and CPU agent
# images, built before, and the GPU agent image when it is listed.)
#
# - buildah builds the Dockerfiles as they are (chroot isolation, vfs storage: no daemon, no
#   overlay filesystem, no user namespaces needed).
# - Base images that cannot be pulled are replaced by stand-ins built from Debian packages and
#   tagged with the real names: `debian:12.12-slim` (debootstrap of bookworm), `rust:1.95.0-slim-
#   bookworm` (that, plus gcc and this machine's Rust 1.95.0 toolchain where the official image
#   keeps it), `gcr.io/distroless/cc-debian12:nonroot` (the Debian base with the nonroot user,
#   65532), `nvidia/cuda:12.8.1-base-ubuntu24.04` (the Debian base: the image needs nothing of
#   CUDA's but the driver, which comes from the node). So this checks our Dockerfiles and what
#   they produce, not the upstream bases.
# - The images run as chroots with the images' users (not in a container runtime): the binaries
#   start from the images' own filesystems, libraries and users, on 127.0.0.1.
# - The GPU image's builder downloads the torch wheel from PyPI (about 4 GB). With no GPU here,
#   its agent runs `--device cpu --backend tch`: the image's libtorch, loaded without Python.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "run as root (buildah with chroot isolation)" >&2; exit 1; }
command -v buildah >/dev/null && command -v debootstrap >/dev/null ||
  { echo "needs buildah and debootstrap: apt-get install -y buildah debootstrap" >&2; exit 1; }

B=(buildah --storage-driver vfs)
work="${NDHTL_IMAGE_CHECK_DIR:-/var/tmp/ndhtl-image-check}"
mkdir -p "$work"
rust_toolchain="${RUSTUP_HOME:-$HOME/.rustup}/toolchains/1.95.0-x86_64-unknown-linux-gnu"

has_image() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# A container from `from`, changed by `shape CONTAINER ROOTFS`, committed as `tag`.
standin() {
  local tag=$1 from=$2 shape=$3
  has_image "$tag" && return 0
  echo "== stand-in base $tag" >&2
  local container root
  container=$("${B[@]}" from --pull=never "$from")
  root=$("${B[@]}" mount "$container")
  "$shape" "$container" "$root"
  "${B[@]}" umount "$container" >/dev/null
  "${B[@]}" commit --quiet "$container" "$tag" >/dev/null
  "${B[@]}" rm "$container" >/dev/null
}

debian_rootfs() {
  local container=$1 root=$2
  [[ -x "$work/bookworm/bin/bash" ]] ||
    debootstrap --variant=minbase bookworm "$work/bookworm" http://deb.debian.org/debian >&2
  cp -a "$work/bookworm/." "$root/"
  "${B[@]}" config --cmd /bin/bash "$container"
}

rust_toolchain_in() {
  local container=$1 root=$2
  # This machine's own extra CAs (an egress proxy that re-signs TLS, say), so that cargo in the
  # stand-in reaches crates.io as cargo on the host does. Only the stand-in gets them.
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$root" /bin/sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && update-ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
  mkdir -p "$root/usr/local/rustup/toolchains" "$root/usr/local/cargo/bin"
  cp -a "$(readlink -f "$rust_toolchain")" "$root/usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu"
  printf 'version = "12"\ndefault_toolchain = "1.95.0-x86_64-unknown-linux-gnu"\nprofile = "minimal"\n' \
    > "$root/usr/local/rustup/settings.toml"
  for tool in cargo rustc rustdoc; do
    ln -sf "/usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/bin/$tool" "$root/usr/local/cargo/bin/$tool"
  done
  "${B[@]}" config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$container"
}

distroless_user() {
  local container=$1 root=$2
  chroot "$root" /bin/sh -c 'groupadd --gid 65532 nonroot && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /home/nonroot nonroot'
  "${B[@]}" config --user 65532:65532 "$container"
}

standin docker.io/library/debian:12.12-slim scratch debian_rootfs
standin docker.io/library/rust:1.95.0-slim-bookworm docker.io/library/debian:12.12-slim rust_toolchain_in
standin gcr.io/distroless/cc-debian12:nonroot docker.io/library/debian:12.12-slim distroless_user
standin docker.io/nvidia/cuda:12.8.1-base-ubuntu24.04 docker.io/library/debian:12.12-slim true

revision=$(git rev-parse HEAD)
read -r -a images <<< "${NDHTL_IMAGES:-coordinator agent-cpu agent-gpu}"
for image in "${images[@]}"; do
  built_from=$("${B[@]}" inspect --type image --format \
    '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' \
    "localhost/ndhtl-$image:check" 2>/dev/null || true)
  if [[ "$built_from" == "$revision" && -z "$(git status --porcelain -- . ':!deploy/check-images.sh')" ]]; then
    echo "== deploy/docker/$image.Dockerfile: already built from $revision" >&2
    continue
  fi
  echo "== build deploy/docker/$image.Dockerfile" >&2
  started=$(date +%s)
  # vfs copies the whole filesystem at every cached layer (tens of GB for the builder stages):
  # layers are cached only when asked for.
  "${B[@]}" bud --quiet --isolation chroot --pull=never --layers="${NDHTL_IMAGE_LAYERS:-false}" \
    --build-arg VERSION=check --build-arg REVISION="$revision" \
    -f "deploy/docker/$image.Dockerfile" -t "localhost/ndhtl-$image:check" . >/dev/null
  echo "   built in $(( $(date +%s) - started )) s" >&2
  "${B[@]}" inspect --type image --format \
    '   user {{.OCIv1.Config.User}}, entrypoint {{.OCIv1.Config.Entrypoint}}, version label {{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}{{"\n"}}' \
    "localhost/ndhtl-$image:check"
done

# Run them: each image's filesystem as a chroot, as the image's user.
declare -a containers=() mounts=() pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for mount in "${mounts[@]}"; do umount "$mount" 2>/dev/null || true; done
  for container in "${containers[@]}"; do "${B[@]}" rm "$container" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
rootfs_of() {
  local container
  container=$("${B[@]}" from --pull=never "$1")
  containers+=("$container")
  "${B[@]}" mount "$container"
}
bind() { # bind SOURCE ROOT TARGET OWNER
  mkdir -p "$1" "$2$3"
  chown -R "$4" "$1"
  mount --bind "$1" "$2$3"
  mounts+=("$2$3")
}
run_dir="$(mktemp -d "$work/run.XXXXXX")"
with_gpu_image=false
[[ " ${images[*]} " == *" agent-gpu "* ]] && with_gpu_image=true
coordinator_root=$(rootfs_of localhost/ndhtl-coordinator:check)
agent_root=$(rootfs_of localhost/ndhtl-agent-cpu:check)
roots=("$coordinator_root" "$agent_root")
if $with_gpu_image; then
  gpu_agent_root=$(rootfs_of localhost/ndhtl-agent-gpu:check)
  roots+=("$gpu_agent_root")
fi
for root in "${roots[@]}"; do
  mkdir -p "$root/dev" "$root/proc"
  mount --bind /dev "$root/dev"; mounts+=("$root/dev")
  mount -t proc proc "$root/proc"; mounts+=("$root/proc")
done
bind "$run_dir/state" "$coordinator_root" /var/lib/ndhtl 65532:65532
bind "$run_dir/work" "$agent_root" /work 10001:10001
bind "$PWD/sweeps" "$agent_root" /sweeps 10001:10001
$with_gpu_image && bind "$run_dir/gpu-work" "$gpu_agent_root" /work 10001:10001

port=17070
echo "== run: the coordinator image (uid 65532), the CPU agent image (uid 10001)" >&2
chroot --userspec=65532:65532 "$coordinator_root" /usr/local/bin/ndhtl-coordinator \
  --listen=127.0.0.1:$port --http-listen=127.0.0.1:18080 --state-dir=/var/lib/ndhtl \
  --cifar-fetch=off > "$run_dir/coordinator.log" 2>&1 &
pids+=($!)
if $with_gpu_image; then
  # chroot does not apply the image's ENV (LD_LIBRARY_PATH to the wheel's libtorch): read it from
  # the image, so that a wrong path in the Dockerfile fails here.
  read -r -a gpu_env <<< "$("${B[@]}" inspect --type image --format '{{range .OCIv1.Config.Env}}{{.}} {{end}}' \
    localhost/ndhtl-agent-gpu:check)"
  echo "== the GPU agent image (uid 10001): $(chroot --userspec=10001:10001 "$gpu_agent_root" \
    /usr/bin/env "${gpu_env[@]}" /usr/local/bin/ndhtl --version | tr '\n' ' ')" >&2
  chroot --userspec=10001:10001 "$gpu_agent_root" /usr/bin/env "${gpu_env[@]}" HOME=/work \
    /usr/local/bin/ndhtl agent --coordinator=http://127.0.0.1:$port --work-dir=/work/agent \
    --device=cpu --backend=tch --slots=1 --drain-secs=5 > "$run_dir/gpu-agent.log" 2>&1 &
  pids+=($!)
fi
chroot --userspec=10001:10001 "$agent_root" /usr/bin/env HOME=/work /usr/local/bin/ndhtl agent \
  --coordinator=http://127.0.0.1:$port --work-dir=/work/agent --slots=2 --drain-secs=5 \
  > "$run_dir/agent.log" 2>&1 &
pids+=($!)
started=$(date +%s)
chroot --userspec=10001:10001 "$agent_root" /usr/bin/env HOME=/work /usr/local/bin/ndhtl submit \
  /sweeps/smoke.yaml --coordinator=http://127.0.0.1:$port --wait > "$run_dir/submit.log" 2>&1 ||
  { tail -20 "$run_dir"/*.log; echo "the smoke sweep failed in the images" >&2; exit 1; }
sweep=$(grep -o 'smoke-[0-9a-f]*' "$run_dir/submit.log" | head -1)
echo "   the smoke sweep ($sweep) finished in $(( $(date +%s) - started )) s" >&2
chroot --userspec=10001:10001 "$agent_root" /usr/local/bin/ndhtl report "$sweep" \
  --coordinator=http://127.0.0.1:$port | grep -E '^\| T[12] \|'
# The coordinator image's HTTP side, from outside.
exec 3<>/dev/tcp/127.0.0.1/18080
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -E '^ndhtl_jobs\{state="succeeded"\} 9$' <&3 >/dev/null ||
  { echo "/metrics does not report 9 succeeded jobs" >&2; exit 1; }
if $with_gpu_image; then
  ran=$(grep -c 'leased' "$run_dir/gpu-agent.log" || true)
  echo "   the GPU agent image (tch on the CPU) leased $ran job(s)" >&2
  (( ran > 0 )) || { tail -20 "$run_dir/gpu-agent.log"; echo "the GPU image's agent ran no job" >&2; exit 1; }
fi
ran_images="coordinator agent-cpu"
$with_gpu_image && ran_images+=" agent-gpu"
echo "images: $ran_images ran the smoke sweep (9 jobs succeeded); checked built from this tree: ${images[*]}"
