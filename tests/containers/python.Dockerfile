# A Debian + Python base for the test builds, standing in for the upstream images (no registry
# is reachable here): built on the debootstrap image the test imports as localhost/stylequeue-debian.
FROM localhost/stylequeue-debian:bookworm
# The host's CA bundle, for pip behind the same TLS setup as the host (empty when it has none).
COPY ca-certificates.crt /etc/stylequeue-test-ca.crt
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -s /etc/stylequeue-test-ca.crt ]; then cat /etc/stylequeue-test-ca.crt >> /etc/ssl/certs/ca-certificates.crt; fi \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
