# One image, two modes: `tidepool controller` and `tidepool agent` (the agent runs the
# node's own zfs userland through the host's /dev/zfs; see the packaging issue).
# Minimal until the packaging issue: builds the binary and nothing else.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tidepool

FROM debian:bookworm-slim
COPY --from=build /src/target/release/tidepool /usr/local/bin/tidepool
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tidepool"]
