# syntax=docker/dockerfile:1.7
# The ndhtl GPU agent: the `tch` build against the libtorch inside PyPI's torch wheel, at the
# version burn-tch's tch expects (torch 2.9.0, the CUDA 12.8 build, which brings its own CUDA
# libraries), on the CUDA 12.8 base image (the driver comes from the node).
#
#   docker build -f deploy/docker/agent-gpu.Dockerfile \
#     --build-arg VERSION=$(git describe --always) --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/ndhtl/ndhtl-agent-gpu:0.1.0 .
#
# Build from the repository root (the context). The builder is the same pinned Rust image as the
# other images, with torch in a venv that torch-sys links against; the torch layer comes before
# the sources, so it is cached across ndhtl builds, and cargo-chef cooks the dependencies in their
# own layer. The runtime image has no Python: only libtorch's shared objects and the CUDA
# libraries of the wheel (about 6 GB), which libtorch finds through its relative RPATH.

ARG TORCH_VERSION=2.9.0
ARG TORCH_SITE=/opt/torch/lib/python3.11/site-packages

FROM rust:1.95.0-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin ndhtl

FROM chef AS builder
# The release profile keeps line tables for profiling; the image's binary drops them and keeps
# its symbols (panics still name their functions). Measured on the tch agent: 330 MB -> 41 MB.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
ARG TORCH_VERSION
ARG TORCH_SITE
# g++: torch-sys compiles tch's C++ shim (the rust image has only gcc).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.* g++=4:12.* \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"
ENV LIBTORCH=${TORCH_SITE}/torch
# Dependencies (torch-sys links the venv's libtorch) are cooked in their own cached layer.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json -p ndhtl-agent --features tch --bin ndhtl
COPY . .
RUN cargo build --release --locked -p ndhtl-agent --features tch --bin ndhtl

FROM nvidia/cuda:12.8.1-base-ubuntu24.04
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG TORCH_VERSION
ARG TORCH_SITE
LABEL org.opencontainers.image.title="ndhtl-agent-gpu" \
      org.opencontainers.image.description="ndhtl agent on libtorch ${TORCH_VERSION} (CUDA 12.8)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/ndhtl/ndhtl" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder ${TORCH_SITE}/torch/lib ${TORCH_SITE}/torch/lib
COPY --from=builder ${TORCH_SITE}/nvidia ${TORCH_SITE}/nvidia
ENV LD_LIBRARY_PATH=${TORCH_SITE}/torch/lib
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin ndhtl
COPY --from=builder /src/target/release/ndhtl /usr/local/bin/ndhtl
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/ndhtl"]
CMD ["agent", "--help"]
