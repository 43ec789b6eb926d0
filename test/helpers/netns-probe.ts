import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

// Programs a test runs as root inside a network namespace (a machine's, or one the test made):
// listeners that report every datagram or connection they see, and a UDP sender that may bind an
// address that is not the namespace's own (what a raw socket with CAP_NET_RAW can forge).

export type Listener = {
  /** One entry per datagram or TCP read: the peer's address and the bytes as latin1. */
  seen: Array<{ from: string; data: string }>;
  close(): void;
};

const LISTEN = `
const [proto, addr, port] = process.argv.slice(1);
const report = (from, data) => console.log(JSON.stringify({ from, data: data.toString('latin1') }));
if (proto === 'udp') {
  const s = require('node:dgram').createSocket('udp4');
  s.on('message', (m, r) => report(r.address, m));
  s.bind(Number(port), addr, () => console.log('ready'));
} else {
  require('node:net').createServer((c) => { c.on('data', (d) => report(c.remoteAddress, d)); c.on('error', () => {}); })
    .listen(Number(port), addr, () => console.log('ready'));
}`;

/** Listens on addr:port (udp or tcp) inside the namespace until close(). */
export async function listenIn(netns: string, proto: 'udp' | 'tcp', addr: string, port: number): Promise<Listener> {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', LISTEN, proto, addr, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const seen: Listener['seen'] = [];
  let buffered = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      buffered += d;
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line === 'ready') resolve();
        else if (line) seen.push(JSON.parse(line));
      }
    });
    child.once('exit', (code) => reject(new Error(`listener in ${netns} exited ${code}: ${stderr}`)));
  });
  return { seen, close: () => child.pid && process.kill(child.pid, 'SIGKILL') };
}

const SEND = `
const [from, fromPort, to, toPort, hex, count, waitMs] = process.argv.slice(1);
const s = require('node:dgram').createSocket('udp4');
const replies = [];
s.on('message', (m, r) => replies.push(r.address));
s.bind(Number(fromPort), from, async () => {
  for (let i = 0; i < Number(count); i++) {
    await new Promise((res) => s.send(Buffer.from(hex, 'hex'), Number(toPort), to, res));
    await new Promise((res) => setTimeout(res, 50));
  }
  setTimeout(() => { console.log(JSON.stringify(replies)); process.exit(0); }, Number(waitMs));
});`;

/**
 * Sends `count` datagrams from from:fromPort inside the namespace (`from` must be one of its
 * addresses: add it first to forge one) and returns who answered within waitMs.
 */
export function sendUdpFrom(netns: string, from: string, fromPort: number, to: string, toPort: number, payload: Buffer, count = 3, waitMs = 500): string[] {
  const out = execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', SEND, from, String(fromPort), to, String(toPort), payload.toString('hex'), String(count), String(waitMs)], { encoding: 'utf8', timeout: 20_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as string[];
}

/** A shell script run as root in the namespace (stdout, or throws with stderr). */
export function rootIn(netns: string, script: string): string {
  return execFileSync('ip', ['netns', 'exec', netns, 'sh', '-c', script], { encoding: 'utf8', timeout: 20_000 });
}

/** Runs a clean-up command whose failure means there was nothing to clean (a link or namespace already gone). */
export function quiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    // already gone
  }
}
