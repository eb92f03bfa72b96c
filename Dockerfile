# siplb in a container: built in a Rust image, run from a slim Debian one as a non-root
# user. Build: `docker build -t siplb .`; run on the host's network (SIP carries
# addresses, which Docker's NAT would get wrong), SIP on the host's address:
#   docker run -d --name siplb --network host -e SIPLB_SIP_ADDRESS=192.0.2.10 \
#     -v siplb-state:/var/lib/siplb siplb
# The management interface then listens on every host address: set a token in your
# configuration, mounted at /etc/siplb/siplb.toml. `docker kill -s HUP siplb` re-reads
# the destination table; `docker stop --time 30 siplb` drains ([sip] drain) and stops.
# `docker exec siplb siplb ctl lb_list` lists the loads.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY crates crates
RUN cargo build --release --locked -p siplb

FROM debian:bookworm-slim
RUN useradd --system --user-group --home-dir /var/lib/siplb --create-home siplb \
 && install -d -o siplb -g siplb -m 0750 /var/lib/siplb
COPY --from=build /src/target/release/siplb /usr/bin/siplb
COPY packaging/container.toml /usr/share/siplb/container.toml
COPY packaging/container-entrypoint /usr/bin/siplb-container
USER siplb
WORKDIR /var/lib/siplb
VOLUME /var/lib/siplb
EXPOSE 5060/udp 5060/tcp 8888/tcp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/bin/siplb", "ctl", "version"]
ENTRYPOINT ["/usr/bin/siplb-container"]
CMD ["run"]
