import type { ErrorBody } from '../protocol/errors.ts';
import type { Session, SessionOutputEvent, StartSessionRequest } from '../protocol/sessions.ts';
import type { CallOptions, HangarClient } from './client.ts';
import { HangarApiError } from './errors.ts';
import { splitStream } from './response-stream.ts';

// Sessions: commands that outlive the connection that started them (and the daemon). Start one,
// go away, come back and read its output from the byte offset you had reached, follow it, attach
// to its terminal, write to it, kill it.
//
//   const s = await client.sessions.start(app, id, ['sh', '-c', 'npm run build']);
//   let offset = 0;
//   const { data, nextOffset, session } = await client.sessions.read(app, id, s.id, { offset });
//   for await (const e of client.sessions.follow(app, id, s.id, { offset: nextOffset })) ...

export type SessionStartOptions = CallOptions & Omit<StartSessionRequest, 'command'>;
export type OutputOptions = CallOptions & { offset?: number; tailBytes?: number; encoding?: 'utf8' | 'base64' };
export type ReadOptions = OutputOptions & { maxBytes?: number };

/** What one read returned: the text (or base64) from `offset`, where to read next, and the session as it is. */
export type SessionRead = {
  data: string;
  /** Where `data` starts: the offset asked for, or the oldest byte kept when that fell out of the scrollback. */
  offset: number;
  nextOffset: number;
  /** Set when the offset asked for was older than the scrollback: bytes [from, to) are gone. */
  gap?: { from: number; to: number };
  session: Session;
};

type EndEvent = Extract<SessionOutputEvent, { type: 'end' }>;

export class SessionsClient {
  readonly #client: HangarClient;
  readonly #token: () => string;

  constructor(client: HangarClient, token: () => string) {
    this.#client = client;
    this.#token = token;
  }

  start(app: string, machine: string, command: string[], opts: SessionStartOptions = {}): Promise<Session> {
    const { timeoutMs, signal, leaseNonce, ...req } = opts;
    return this.#client.call<Session>('POST', base(app, machine), { command, ...req }, { timeoutMs, signal, leaseNonce });
  }

  /** Running and recently ended sessions, newest first. */
  list(app: string, machine: string, opts?: CallOptions): Promise<Session[]> {
    return this.#client.call<Session[]>('GET', base(app, machine), undefined, opts);
  }

  get(app: string, machine: string, session: string, opts?: CallOptions): Promise<Session> {
    return this.#client.call<Session>('GET', `${base(app, machine)}/${enc(session)}`, undefined, opts);
  }

  /** The output written so far from `offset` (default: the oldest byte kept), at most `maxBytes` of it. */
  async read(app: string, machine: string, session: string, opts: ReadOptions = {}): Promise<SessionRead> {
    const res = await this.#output(app, machine, session, { ...opts, follow: false });
    let data = '';
    let offset: number | undefined;
    let gap: SessionRead['gap'];
    for await (const event of lines(res)) {
      if (event.type === 'gap') gap = { from: event.from, to: event.to };
      else if (event.type === 'output') {
        offset ??= event.offset;
        data += event.data;
      } else return { data, offset: offset ?? event.offset, nextOffset: event.offset, ...(gap ? { gap } : {}), session: event.session };
    }
    throw new HangarApiError(0, { hint: 'read again from the same offset' }, 'the output stream ended early');
  }

  /** Output events as they are written, until the session ends (the last event is `end`) or the signal aborts. */
  async *follow(app: string, machine: string, session: string, opts: OutputOptions = {}): AsyncGenerator<SessionOutputEvent> {
    yield* lines(await this.#output(app, machine, session, { ...opts, follow: true }));
  }

  /** Writes to its stdin (a session started with stdin or tty). */
  async write(app: string, machine: string, session: string, data: string, opts?: CallOptions): Promise<void> {
    await this.#client.call('POST', `${base(app, machine)}/${enc(session)}/input`, { data }, opts);
  }

  /** Signals the command (default SIGKILL); resolves with the session once it ended (or after a few seconds). */
  kill(app: string, machine: string, session: string, signal?: string, opts?: CallOptions): Promise<Session> {
    return this.#client.call<Session>('POST', `${base(app, machine)}/${enc(session)}/kill`, signal ? { signal } : {}, opts);
  }

  /** The session's output (from `offset`, default all that is kept) and then live, with stdin and resize, over a WebSocket. */
  attach(app: string, machine: string, session: string, opts: { offset?: number; tailBytes?: number } = {}): SessionAttachment {
    const q = query({ offset: opts.offset, tail_bytes: opts.tailBytes });
    const url = `${this.#client.baseUrl.replace(/^http/, 'ws')}${base(app, machine)}/${enc(session)}/attach${q}`;
    return SessionAttachment.open(url, this.#token());
  }

  #output(app: string, machine: string, session: string, opts: ReadOptions & { follow: boolean }): Promise<Response> {
    const { offset, tailBytes, maxBytes, encoding, follow, ...call } = opts;
    const q = query({ offset, tail_bytes: tailBytes, max_bytes: maxBytes, encoding, follow: follow ? 'true' : undefined });
    return this.#client.raw('GET', `${base(app, machine)}/${enc(session)}/output${q}`, undefined, { ...call, accept: 'application/x-ndjson' });
  }
}

/** A WebSocket attached to a session. Closing it (`detach()`) leaves the session running. */
export class SessionAttachment {
  readonly #socket: WebSocket;
  readonly #pending: string[] = [];
  /** Resolves with the session once it has ended; rejects if the connection fails or closes first. */
  readonly ended: Promise<Session>;
  #onOutput: (data: string, offset: number) => void = () => {};
  #onGap: (from: number, to: number) => void = () => {};
  #onError: (err: HangarApiError) => void = () => {};

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    this.ended = new Promise((resolve, reject) => {
      socket.addEventListener('open', () => {
        for (const msg of this.#pending.splice(0)) socket.send(msg);
      });
      socket.addEventListener('message', (event) => {
        const msg = JSON.parse(String(event.data)) as SessionOutputEvent | ({ type: 'error' } & Partial<ErrorBody>);
        if (msg.type === 'output') this.#onOutput(msg.data, msg.offset);
        else if (msg.type === 'gap') this.#onGap(msg.from, msg.to);
        else if (msg.type === 'end') resolve((msg as EndEvent).session);
        else if (msg.type === 'error') this.#onError(new HangarApiError(400, msg, 'session attach failed'));
      });
      socket.addEventListener('close', (event) => {
        reject(new HangarApiError(0, { hint: 'the session keeps running; attach again, or read its output' }, `detached (${event.code}) before the session ended`));
      });
      socket.addEventListener('error', () => {
        reject(new HangarApiError(0, { hint: 'is the daemon running, and the token right?' }, 'session attach failed to connect'));
      });
    });
    this.ended.catch(() => {});
  }

  static open(url: string, token: string): SessionAttachment {
    const Ctor = WebSocket as unknown as new (url: string, init: { headers: Record<string, string> }) => WebSocket;
    return new SessionAttachment(new Ctor(url, { headers: { authorization: `Bearer ${token}` } }));
  }

  /** Errors the server reports for a message (a write to an ended session...); the attachment stays open. */
  onError(listener: (err: HangarApiError) => void): void {
    this.#onError = listener;
  }

  onOutput(listener: (data: string, offset: number) => void): void {
    this.#onOutput = listener;
  }

  /** Called when the output asked for starts before the scrollback: bytes [from, to) are gone. */
  onGap(listener: (from: number, to: number) => void): void {
    this.#onGap = listener;
  }

  write(data: string): void {
    this.#send({ type: 'stdin', data });
  }

  resize(rows: number, cols: number): void {
    this.#send({ type: 'resize', rows, cols });
  }

  kill(signal?: string): void {
    this.#send({ type: 'kill', ...(signal ? { signal } : {}) });
  }

  detach(): void {
    this.#socket.close(1000, 'detached');
  }

  #send(msg: object): void {
    if (this.#socket.readyState === WebSocket.CONNECTING) this.#pending.push(JSON.stringify(msg));
    else if (this.#socket.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(msg));
  }
}

/** The sessions of one machine, as `machine.sessions` holds them. */
export class MachineSessions {
  readonly #sessions: SessionsClient;
  readonly #app: string;
  readonly #id: string;

  constructor(sessions: SessionsClient, app: string, id: string) {
    this.#sessions = sessions;
    this.#app = app;
    this.#id = id;
  }

  start(command: string[], opts?: SessionStartOptions): Promise<Session> {
    return this.#sessions.start(this.#app, this.#id, command, opts);
  }

  list(opts?: CallOptions): Promise<Session[]> {
    return this.#sessions.list(this.#app, this.#id, opts);
  }

  get(session: string, opts?: CallOptions): Promise<Session> {
    return this.#sessions.get(this.#app, this.#id, session, opts);
  }

  read(session: string, opts?: ReadOptions): Promise<SessionRead> {
    return this.#sessions.read(this.#app, this.#id, session, opts);
  }

  follow(session: string, opts?: OutputOptions): AsyncGenerator<SessionOutputEvent> {
    return this.#sessions.follow(this.#app, this.#id, session, opts);
  }

  write(session: string, data: string, opts?: CallOptions): Promise<void> {
    return this.#sessions.write(this.#app, this.#id, session, data, opts);
  }

  kill(session: string, signal?: string, opts?: CallOptions): Promise<Session> {
    return this.#sessions.kill(this.#app, this.#id, session, signal, opts);
  }

  attach(session: string, opts?: { offset?: number; tailBytes?: number }): SessionAttachment {
    return this.#sessions.attach(this.#app, this.#id, session, opts);
  }
}

async function* lines(res: Response): AsyncGenerator<SessionOutputEvent> {
  for await (const line of splitStream(res, '\n')) if (line) yield JSON.parse(line) as SessionOutputEvent;
}

function base(app: string, machine: string): string {
  return `/v1/apps/${enc(app)}/machines/${enc(machine)}/sessions`;
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : '';
}
