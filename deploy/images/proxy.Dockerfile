# sidelane/proxy — for people who build with Docker (the project itself builds this image
# without Docker: hack/images.sh). From the repository root:
#   docker build -f deploy/images/proxy.Dockerfile -t sidelane/proxy:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/sidelane-proxy ./proxy

FROM scratch
COPY --from=build /out/sidelane-proxy /usr/local/bin/sidelane-proxy
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/sidelane-proxy"]
