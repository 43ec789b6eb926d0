import { randomBytes } from 'node:crypto';
import { closeSync, openSync, unlinkSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { bindMount, detachMount } from '../storage/mount-api.ts';
import { netnsName } from './names.ts';
import { ipStep, type ShellRunner } from './net-shell.ts';

// A machine's network namespace made ahead, with all of it that does not depend on the machine:
// its veth pair (eth0 inside, down, its host end loose), IPv6 off, low ports and ICMP echo open
// to the namespace's users, lo up. A create takes it under the machine's name and gives it its
// address, MAC, bridge and guard: one `ip` on each side instead of making a namespace and a veth
// pair and writing its sysctls (three times the commands, ~10 ms here). One is kept ready; what
// a daemon that died had made ready is swept by the next (and by `hangar network prune`: the
// names carry the daemon's tag).

export const NETNS_DIR = '/run/netns';

/** Enough for the create that took the last one to finish first (it took it early on), not more: the next create may come soon. */
const MAKE_DELAY_MS = 30;

export type ReadyNamespace = { netns: string; veth: string };

/**
 * The namespace's settings as a shell line: IPv6 off on eth0; and since the namespace belongs to
 * the host's user namespace, a machine's root (root only in its own) has no
 * CAP_NET_BIND_SERVICE or CAP_NET_RAW here, so low ports and ICMP echo (datagram sockets) are
 * opened to every user of the namespace instead, as Docker does; raw sockets, and with them
 * forged packets, stay out of reach.
 */
export function namespaceSysctls(netnsPath: string): string {
  return (
    `nsenter --net=${netnsPath} sh -c 'echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 && ` +
    `echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start && echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range'`
  );
}

export class ReadyNamespaces {
  readonly #tag: string;
  readonly #shell: ShellRunner;
  #ready: ReadyNamespace | undefined;
  #making = false;
  #swept = false;
  #closed = false;

  /** `shell` runs the making, off the requests' own shell. */
  constructor(tag: string, shell: ShellRunner) {
    this.#tag = tag;
    this.#shell = shell;
  }

  /**
   * The namespace made ahead, now named `netns` (its veth's host end is still `ready.veth`), and
   * the next one made; undefined when none was ready (the first create makes its own).
   */
  take(netns: string): ReadyNamespace | undefined {
    const ready = this.#ready;
    this.#ready = undefined;
    this.#makeNext();
    if (!ready) return undefined;
    // Failing, the create makes its own; the ready one is swept with the others.
    return renameNamespace(ready.netns, netns) ? { netns, veth: ready.veth } : undefined;
  }

  /** Stops making them; the daemon's teardown removes the one ready with its other namespaces. */
  close(): void {
    this.#closed = true;
  }

  #makeNext(): void {
    if (this.#closed || this.#making) return;
    this.#making = true;
    setTimeout(() => void this.#make().finally(() => (this.#making = false)), MAKE_DELAY_MS).unref();
  }

  async #make(): Promise<void> {
    const id = randomBytes(7).toString('hex');
    // Not machine ids (those are hex): "m" while it is made, "r" once ready, and 13 more, as long as a machine's.
    const netns = netnsName(this.#tag, `m${id.slice(1)}`);
    const readyName = netnsName(this.#tag, `r${id.slice(1)}`);
    const veth = `hr${this.#tag}${id.slice(0, 9)}`;
    const prefix = netnsName(this.#tag, '');
    const stale = this.#swept ? [] : (await readdir(NETNS_DIR).catch(() => [] as string[])).filter((n) => n.startsWith(prefix) && /^[mr]/.test(n.slice(prefix.length)));
    this.#swept = true;
    const made = await this.#shell.run([
      ...(stale.length > 0 ? [`ip -force -batch - 2>/dev/null <<'EOF' || true\n${stale.map((n) => `netns del ${n}`).join('\n')}\nEOF`] : []),
      ipStep(undefined, [`netns add ${netns}`, `link add ${veth} type veth peer name eth0 netns ${netns}`, `link set ${veth} addrgenmode none`]),
      namespaceSysctls(`${NETNS_DIR}/${netns}`),
      ipStep(netns, ['link set lo up']),
    ]).then(() => true, () => false);
    // Named ready only now, in the step that keeps it: whoever sees the name (a test, an operator) sees one to take.
    if (made && !this.#closed && renameNamespace(netns, readyName)) {
      this.#ready = { netns: readyName, veth };
      return;
    }
    // The next create makes its own and has another made.
    await this.#shell.run([`ip netns del ${netns} 2>/dev/null || true`]).catch(() => undefined);
  }
}

/** Gives a named namespace another name (its file is a mount: a bind under the new one, the old detached); false if it could not. */
function renameNamespace(from: string, to: string): boolean {
  const [source, target] = [`${NETNS_DIR}/${from}`, `${NETNS_DIR}/${to}`];
  try {
    // What `ip netns add` mounts on: an empty file.
    closeSync(openSync(target, 'wx', 0));
    bindMount(source, target);
  } catch {
    return false;
  }
  try {
    detachMount(source);
    unlinkSync(source);
  } catch {
    // Swept with the others: the namespace has its new name either way.
  }
  return true;
}
