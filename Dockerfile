# syntax=docker/dockerfile:1

# hookproxy as a small static image: one binary built with CGO_ENABLED=0 on
# distroless/static (CA certificates, /etc/passwd, no shell, no curl), run
# as the non-root user 65532, its store on the /data volume.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t hookproxy .
#   docker run -v hookproxy-data:/data -p 127.0.0.1:8080:8080 hookproxy
#
# deploy_test.go checks this file against the code: the same go build as
# `go build .`, the version stamp, the commands and flags used below.

# Keep in step with the go line of go.mod (the image runs with
# GOTOOLCHAIN=local, so an older Go would refuse to build).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/hookproxy .
# The directories a fresh named volume is mounted on: Docker gives the new
# volume their owner, so hookproxy (uid 65532) can write there. /data holds
# the store and the generated CA; /ca is for the CA bundle when it is
# shared with the app's container through a volume of its own.
RUN mkdir -p /out/data /out/ca

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hookproxy /hookproxy
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/ca /ca
USER 65532:65532
# The proxy listens on every interface of the container; so does the admin
# listener, for health checks and probes from outside the container (set
# HOOKPROXY_ADMIN_TOKEN when that network is not yours alone).
ENV HOOKPROXY_LISTEN=:8080 \
    HOOKPROXY_ADMIN_LISTEN=0.0.0.0:9090 \
    HOOKPROXY_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080 9090
# No curl in the image: the binary asks its own admin API's /healthz (it
# reads HOOKPROXY_ADMIN_LISTEN from the environment) and exits non-zero
# unless hookproxy has started and is alive. Readiness (/readyz, with
# "health --ready") fails while the buffer is nearly full or the sender is
# stalled: a matter for an alert, not for the container's health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/hookproxy", "health", "--timeout", "4s"]
# SIGTERM: stop intake, send what is pending for up to
# HOOKPROXY_DRAIN_TIMEOUT (20s), keep the rest on /data. Give the container
# longer than that to stop (docker stop -t 40, stop_grace_period: 40s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/hookproxy"]
CMD ["serve"]
