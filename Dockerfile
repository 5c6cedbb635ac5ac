# syntax=docker/dockerfile:1
# Build: docker build --build-arg VERSION=$(git describe --tags --always) -t dispenser .
# The build flags are the same as scripts/build-static.sh (tested in CI).
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/dispenser ./cmd/dispenser \
 && mkdir -p /out/data /out/var/lib/dispenser/key /out/var/lib/dispenser/anchors

# Runtime: no shell, no package manager; CA certificates for STS/IAM over
# TLS; a fixed non-root user. The root filesystem can be mounted read-only:
# the only writable path is /data (mount a volume there for the SQLite
# audit database; with PostgreSQL nothing is written locally). Relative
# paths in the configuration resolve against its directory (/etc/dispenser):
# leave audit.path unset (dispenser-audit.db in the working directory, /data)
# or name /data/... absolutely.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dispenser /usr/local/bin/dispenser
COPY --from=build --chown=65532:65532 /out/data /data
# Mount points for the audit checkpoint key and anchors (owned by the
# runtime user, so fresh volumes mounted there are writable by it).
COPY --from=build --chown=65532:65532 /out/var/lib/dispenser /var/lib/dispenser
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
# 8080: the credential API; 9090: the admin listener (/metrics, /healthz,
# /readyz). No HEALTHCHECK: probes belong to the orchestrator.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/dispenser"]
CMD ["serve", "--config", "/etc/dispenser/dispenser.yaml"]
