# The controller image: `docker build -t stevedore:0.1.0 .`
# Build stage: the release binary, with dependencies cached apart from the sources.
FROM rust:1-bookworm AS build
WORKDIR /src
# Cargo reads every target the manifest declares (the benchmark too) before it builds one.
COPY Cargo.toml Cargo.lock ./
COPY benches benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin stevedore || true
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin stevedore \
    && strip target/release/stevedore

# Runtime: the binary, CA certificates, and the ssh client (ssh:// targets run
# `docker system dial-stdio` on the remote host through it). Runs as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/stevedore /usr/local/bin/stevedore
USER 65532:65532
ENV HOME=/tmp
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stevedore"]
CMD ["controller"]
