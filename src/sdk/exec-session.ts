import type { ExecEvent } from '../protocol/schemas.ts';
import { ResultOutput, type ExecResult } from './exec-handle.ts';
import type { ErrorBody } from '../protocol/errors.ts';
import { HangarApiError } from './errors.ts';

// An interactive command over the WebSocket exec endpoint: stdin, terminal resizes and kill go
// up, output and the exit status come down. `hangar console` is one of these with a tty.

export type ExecSessionStart = {
  command: string[];
  tty?: boolean;
  rows?: number;
  cols?: number;
  timeout?: number;
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string;
  /** The most output `result` keeps, stdout and stderr together (head and tail); default 1 MiB. */
  maxOutputBytes?: number;
};

type ServerMessage = ExecEvent | ({ type: 'error' } & Partial<ErrorBody>);

export class ExecSession {
  readonly #socket: WebSocket;
  /** What was sent before the socket opened; it goes right after the start message. */
  readonly #pending: string[] = [];
  /** Resolves when the command ends, with what it wrote (within maxOutputBytes); rejects on a protocol or connection error. */
  readonly result: Promise<ExecResult>;
  #onOutput: (stream: 'stdout' | 'stderr', data: string) => void = () => {};

  private constructor(socket: WebSocket, start: ExecSessionStart) {
    this.#socket = socket;
    this.result = new Promise((resolve, reject) => {
      const { maxOutputBytes, ...startMessage } = start;
      const out = new ResultOutput(maxOutputBytes);
      socket.addEventListener('open', () => {
        socket.send(JSON.stringify({ type: 'start', ...startMessage }));
        for (const msg of this.#pending.splice(0)) socket.send(msg);
      });
      socket.addEventListener('message', (event) => {
        const msg = JSON.parse(String(event.data)) as ServerMessage;
        if (msg.type === 'exit') {
          resolve(out.result(msg));
        } else if (msg.type === 'error') {
          reject(new HangarApiError(400, msg, 'exec session failed'));
        } else {
          out.add(msg.type, msg.data);
          this.#onOutput(msg.type, msg.data);
        }
      });
      socket.addEventListener('close', (event) => {
        reject(new HangarApiError(0, { hint: 'the connection to the daemon ended; check the machine with machines.get' }, `exec session closed (${event.code}) before the command ended`));
      });
      socket.addEventListener('error', () => {
        reject(new HangarApiError(0, { hint: 'is the daemon running, and the token right? start it with: hangar serve' }, 'exec session failed to connect'));
      });
    });
    this.result.catch(() => {});
  }

  /**
   * Opens a session. Runtimes whose WebSocket takes headers (Node 22+, Deno, Bun) send the token
   * as a bearer header; browsers cannot, and should use the streaming HTTP exec instead.
   */
  static open(url: string, token: string, start: ExecSessionStart): ExecSession {
    const Ctor = WebSocket as unknown as new (url: string, init: { headers: Record<string, string> }) => WebSocket;
    return new ExecSession(new Ctor(url, { headers: { authorization: `Bearer ${token}` } }), start);
  }

  /** Called with each piece of output as it arrives (output before this is set is in `result`). */
  onOutput(listener: (stream: 'stdout' | 'stderr', data: string) => void): void {
    this.#onOutput = listener;
  }

  write(data: string): void {
    this.#send({ type: 'stdin', data });
  }

  closeStdin(): void {
    this.#send({ type: 'stdin_close' });
  }

  resize(rows: number, cols: number): void {
    this.#send({ type: 'resize', rows, cols });
  }

  kill(): void {
    this.#send({ type: 'kill' });
  }

  #send(msg: object): void {
    if (this.#socket.readyState === WebSocket.CONNECTING) this.#pending.push(JSON.stringify(msg));
    else if (this.#socket.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(msg));
  }
}
