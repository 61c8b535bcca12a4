#!/usr/bin/env bash
# Debian packages the one-node cluster tests need (tests/test_cluster.py),
# and the browser of the web UI's tests (tests/test_ui_browser.py):
#   containerd, runc                 the container runtime the kubelet drives (CRI)
#   containernetworking-plugins      bridge, host-local, loopback (in /usr/lib/cni)
#   iptables, conntrack              kube-proxy's Service rules; the API server's DNAT
#   buildah, debootstrap             the image, built from the Dockerfile without Docker
#   chromium                         Playwright drives it (never a downloaded browser)
# Installs only what is missing; prints nothing when everything is there.
# Run as root (CI is); without root it says what to install and fails.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables conntrack buildah debootstrap
  chromium)

missing=()
for package in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null || true)"
  [[ "$status" == ii* ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "the cluster and browser tests need these Debian packages (as root):" \
    "apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages for the cluster and browser tests: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine may be empty or stale; apt's own
# chatter goes to a log, shown only when something fails.
# No recommends: they would pull in a Docker-less "docker" wrapper and
# fuse-overlayfs/slirp4netns, none of which the tests use. Debian's containerd
# package also ships a systemd unit; no systemd runs here, and the tests start
# their own containerd with their own root, state and socket.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! apt-get update -qq >"$log" 2>&1 \
  || ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
