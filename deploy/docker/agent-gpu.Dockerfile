# syntax=docker/dockerfile:1.7
# The ndhtl GPU agent: the `tch` build against the libtorch inside PyPI's torch wheel, at the
# version burn-tch's tch expects (torch 2.9.0, the CUDA 12.8 build, which brings its own CUDA
# libraries), on the CUDA 12.8 base image (the driver comes from the node).
#
#   docker build -f deploy/docker/agent-gpu.Dockerfile \
#     --build-arg VERSION=$(git describe --always) --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/ndhtl/ndhtl-agent-gpu:0.1.0 .
#
# Build from the repository root (the context). The image is large (about 7 GB: torch's CUDA
# libraries); the torch layer comes first so it is cached across ndhtl builds, and cargo-chef
# cooks the dependencies in their own layer.

ARG TORCH_VERSION=2.9.0

# torch (libtorch and its nvidia libraries) in a venv, shared by the builder and the runtime.
FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS torch
ARG TORCH_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12=3.12.* python3.12-venv=3.12.* \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"

FROM torch AS chef
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential=12.* curl=8.* ca-certificates=20240203* \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
  | sh -s -- -y --profile minimal --default-toolchain 1.95.0 \
 && cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin ndhtl

# Dependencies (torch-sys links the venv's libtorch) are cooked in their own cached layer.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN LIBTORCH="$(/opt/torch/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
    cargo chef cook --release --recipe-path recipe.json -p ndhtl-agent --features tch --bin ndhtl
COPY . .
RUN LIBTORCH="$(/opt/torch/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
    cargo build --release --locked -p ndhtl-agent --features tch --bin ndhtl

FROM torch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG TORCH_VERSION
LABEL org.opencontainers.image.title="ndhtl-agent-gpu" \
      org.opencontainers.image.description="ndhtl agent on libtorch ${TORCH_VERSION} (CUDA 12.8)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/ndhtl/ndhtl" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LD_LIBRARY_PATH=/opt/torch/lib/python3.12/site-packages/torch/lib
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin ndhtl
COPY --from=builder /src/target/release/ndhtl /usr/local/bin/ndhtl
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/ndhtl"]
CMD ["agent", "--help"]
