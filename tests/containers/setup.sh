#!/bin/sh
# What `make test-containers` needs on a Debian machine without Docker: podman (with runc and
# cgroupfs, no default ulimits: see ../../docs/operations.md), debootstrap for the base image,
# and podman-compose in the project's venv. Idempotent; needs root.
set -eu
missing=""
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
mkdir -p /etc/containers/containers.conf.d
# crun refuses these machines' hybrid cgroups; default ulimits cannot be set here.
printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
    > /etc/containers/containers.conf.d/stylequeue-tests.conf
"${VENV:-.venv}/bin/pip" install --quiet "podman-compose>=1.2"
podman --version
"${VENV:-.venv}/bin/podman-compose" --version | head -1
