# moat as a container (docs/docker.md). The image does not compile moat: it takes a binary
# built on the host, so that no Rust toolchain is needed in the image.
#
#   cargo build --release
#   docker build -t moat:0.1.0 .
#
# Run it on the host's network, with NET_ADMIN, the log directories and a state volume:
# dist/swarm/moat-stack.yml (every node of a Swarm), or `docker run` as in docs/docker.md.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# The kernel's tools: libnftables (which moat loads) and nft, and iptables with ipset for
# hosts whose firewall is iptables. Skipped when the base has them already (the test suite
# builds its base offline with debootstrap, with these packages in it).
RUN if ! command -v nft >/dev/null || ! command -v iptables >/dev/null || ! command -v ipset >/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nftables iptables ipset \
      && rm -rf /var/lib/apt/lists/*; \
    fi

COPY target/release/moat /usr/bin/moat
# Blocks nothing until a jail is enabled; give the container your own (a Docker config).
COPY dist/moat.toml /etc/moat/moat.toml

# The ledger: keep it in a volume, or bans and cursors are lost with the container.
VOLUME /var/lib/moat
ENTRYPOINT ["/usr/bin/moat"]
CMD ["run", "-c", "/etc/moat/moat.toml"]
