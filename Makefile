# Sidelane — see README.md. Every target runs on a fresh Debian machine as root;
# `make deps` installs what the targets need (apt packages, Go modules).
SHELL := /bin/bash
# Go keeps its module and build caches under HOME; a bare CI environment may not set it.
export HOME ?= $(shell getent passwd $$(id -u) | cut -d: -f6)
GO ?= go
BIN := bin
GOFLAGS_BUILD := -trimpath -ldflags '-s -w'
export CGO_ENABLED := 0

BINARIES := sidelane-cni:./cni-plugin sidelane-agent:./node-agent sidelane-proxy:./proxy \
            sidelane-injector:./injector kubectl-sidelane:./kubectl-sidelane

.PHONY: help build test test-unit test-e2e bench lint deps demo demo-down images push manifests clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install the apt packages and Go modules the other targets need
	@hack/install-deps.sh

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do n=$${b%%:*}; p=$${b#*:}; \
	  if [ -d "$$p" ]; then echo "go build -o $(BIN)/$$n $$p"; $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/$$n $$p || exit 1; fi; done

test: deps build ## run every test: unit, privileged (root) and end-to-end on a local cluster
	@hack/test.sh all

test-unit: deps ## unit and privileged tests only (no cluster)
	@hack/test.sh unit

test-e2e: deps build ## end-to-end tests on a local single-node cluster
	@hack/test.sh e2e

bench: deps build ## run every benchmark and print one side-by-side table
	@hack/bench.sh

lint: ## gofmt, go vet and helm lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd hack/chart && $(GO) vet ./... && $(GO) run . lint

manifests: ## render deploy/base from the Helm chart deploy/helm/sidelane (default values)
	cd hack/chart && $(GO) run . render

demo: deps build ## local single-node cluster with Sidelane and a captured workload
	@hack/demo.sh up

demo-down: ## tear the demo cluster down and leave the host clean
	@hack/demo.sh down

images: build ## write OCI image tarballs into bin/images/
	@hack/images.sh build

push: images ## push the images: make push REGISTRY=registry.example/sidelane
	@hack/images.sh push "$(REGISTRY)"

clean:
	rm -rf $(BIN)
