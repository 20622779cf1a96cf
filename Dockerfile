# syntax=docker/dockerfile:1
#
# io360's two container images, from one multi-stage build:
#
#   io360           every tier: the operator's pods run `io360 serve <tier>`; with no arguments
#                   the image runs `io360 up` (all tiers in one process, the demo site on :8080)
#   io360-operator  the Kubernetes operator (`io360-operator run ...`)
#
#   docker build --target io360          -t io360:0.1.0          .
#   docker build --target io360-operator -t io360-operator:0.1.0 .
#
# Both run as uid/gid 65532 on a read-only root filesystem: the tiers write only under /data.
# tests/images/build.sh builds the same file without a daemon, from bases made locally.

ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
# One cargo run builds both binaries, so the dependencies they share compile once. The registry
# and the target directory are cache mounts: a rebuild compiles only what changed. The target
# directory is not part of any layer, so the binaries are copied out (stripped) in the same step.
#
# Cargo tells what changed from file times, but a COPY layer taken from the build cache brings
# back the times of the files it was first made from: a file changed and then changed back would
# look older than the last build and not be compiled again. So each file whose contents differ
# from those the last successful build saw is touched first; their hashes are kept in the target
# directory, next to the build they describe.
RUN --mount=type=cache,id=io360-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=io360-cargo-target,target=/src/target,sharing=locked \
    set -eu; export LC_ALL=C; \
    find . -path ./target -prune -o -type f -print0 > /tmp/files; \
    xargs -0 sha256sum < /tmp/files > /tmp/sums; \
    sort -o /tmp/sources /tmp/sums; \
    [ -f target/sources.sha256 ] || : > target/sources.sha256; \
    comm -13 target/sources.sha256 /tmp/sources > /tmp/changed; \
    cut -c67- /tmp/changed | tr '\n' '\0' | xargs -0 -r touch --; \
    cargo build --release --locked -p io360 -p io360-operator; \
    cp /tmp/sources target/sources.sha256; \
    mkdir -p /out/bin /out/data; \
    strip --strip-all -o /out/bin/io360 target/release/io360; \
    strip --strip-all -o /out/bin/io360-operator target/release/io360-operator; \
    rm -f /tmp/files /tmp/sums /tmp/sources /tmp/changed

FROM ${RUNTIME_IMAGE} AS io360-operator
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://io360.dev
LABEL org.opencontainers.image.title="io360-operator" \
      org.opencontainers.image.description="Kubernetes operator for io360: reconciles CommentCluster resources into io360's tiers" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/io360-operator /usr/local/bin/io360-operator
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
# /metrics, /healthz and /readyz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/io360-operator"]
CMD ["run"]

# Last, so that a build without --target gives the tier image.
FROM ${RUNTIME_IMAGE} AS io360
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://io360.dev
LABEL org.opencontainers.image.title="io360" \
      org.opencontainers.image.description="io360 comment infrastructure: every tier in one binary (io360 serve <tier>, or io360 up)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/io360 /usr/local/bin/io360
# An empty /data owned by the runtime user: a new volume mounted there starts writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
# Pods run `command: ["io360"]`, found on this PATH. Every tier listens on 8080 on all
# interfaces; store and logger (and `io360 up`) keep their data in /data.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    IO360_ADDR=0.0.0.0:8080 \
    IO360_DATA_DIR=/data
USER 65532:65532
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/io360"]
CMD ["up"]
