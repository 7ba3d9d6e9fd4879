# sidelane/demo-app — for people who build with Docker (the project itself builds this image
# without Docker: hack/images.sh). From the repository root:
#   docker build -f deploy/images/demo-app.Dockerfile -t sidelane/demo-app:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/demo-app ./demo-app

FROM scratch
COPY --from=build /out/demo-app /usr/local/bin/demo-app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/demo-app"]
CMD ["serve"]
