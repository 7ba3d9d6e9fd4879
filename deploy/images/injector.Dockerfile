# sidelane/injector — for people who build with Docker (the project itself builds this image
# without Docker: hack/images.sh). From the repository root:
#   docker build -f deploy/images/injector.Dockerfile -t sidelane/injector:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/sidelane-injector ./injector

FROM scratch
COPY --from=build /out/sidelane-injector /usr/local/bin/sidelane-injector
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sidelane-injector"]
