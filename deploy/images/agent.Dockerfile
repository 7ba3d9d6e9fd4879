# sidelane/agent — for people who build with Docker (the project itself builds this image
# without Docker: hack/images.sh). From the repository root:
#   docker build -f deploy/images/agent.Dockerfile -t sidelane/agent:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/sidelane-agent ./node-agent
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/sidelane-cni ./cni-plugin

FROM scratch
COPY --from=build /out/sidelane-agent /usr/local/bin/sidelane-agent
COPY --from=build /out/sidelane-cni /usr/local/bin/sidelane-cni
USER 0:0
ENTRYPOINT ["/usr/local/bin/sidelane-agent"]
CMD ["run"]
