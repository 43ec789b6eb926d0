// A machine that answers any HTTP upgrade with 101 (echoing the Upgrade asked for, and naming
// itself in X-Machine), then echoes every byte: busybox nc hands each connection to a script.

const UPGRADE_SH = [
  '#!/bin/sh',
  'upgrade=',
  'while read -r line; do',
  '  line=${line%$(printf "\\r")}',
  '  [ -z "$line" ] && break',
  '  case "$line" in [Uu]pgrade:*) upgrade=${line#*: } ;; esac',
  'done',
  'printf "HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: %s\\r\\nX-Machine: %s\\r\\n\\r\\n" "$upgrade" "$FLY_MACHINE_ID"',
  'exec cat',
  '',
].join('\n');

/** Its config, serving on port 9000 through the proxy. */
export const UPGRADE_ECHO_CONFIG = {
  image: 'hangar/busybox',
  init: { cmd: ['nc', '-ll', '-p', '9000', '-e', '/bin/upgrade'] },
  files: [{ guest_path: '/bin/upgrade', raw_value: Buffer.from(UPGRADE_SH).toString('base64'), mode: 0o755 }],
  services: [{ internal_port: 9000 }],
};
