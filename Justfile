# Every recipe is one plain command; CI (.ci/run) runs the same ones, so
# `just` is a convenience, never a requirement.

# list the recipes
default:
    @just --list

# run the bundled examples on the embedded broker
run:
    go run . run examples/hello examples/pipeline examples/flaky examples/scheduled

# the test command of the README and of CI
test:
    go test -race -timeout 30m ./...

# what CI runs: brokers up, gofmt, vet, tests
ci:
    ./.ci/run

# validate the bundled examples
check:
    go run . check examples/hello examples/pipeline examples/flaky examples/scheduled

# build the binary into ./bin
build:
    go build -o bin/symphony .

# the benchmarks of bench/README.md
bench:
    cd bench && go run . all
