# syntax=docker/dockerfile:1
# The scc image for those who build with Docker. Without a container engine,
# `go run ./cmd/scc-image` writes the same image (a static binary, run as a
# non-root user) as a tar file to load with `docker load` or `ctr import`.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/scc ./cmd/scc

FROM scratch
COPY --from=build /out/scc /scc
COPY --chown=0:0 <<EOT /etc/passwd
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOT
COPY --chown=0:0 <<EOT /etc/group
root:x:0:
nonroot:x:65532:
EOT
USER 65532:65532
ENTRYPOINT ["/scc"]
