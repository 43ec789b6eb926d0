import type { CreateMachineRequest } from '../protocol/schemas.ts';
import type { AppSettingsRequest } from '../protocol/app-settings.ts';
import type { SealRequest } from '../protocol/sealed-secret.ts';
import type { AppSecretInput } from '../protocol/app-secrets.ts';
import { HangarClient, type CallOptions, type ClientOptions } from './client.ts';
import { Machine } from './machine.ts';

/**
 * The robot-facing facade:
 *   const hangar = new Hangar({ baseUrl, token });
 *   const m = await hangar.machines.create('my-app', { config: { image: 'hangar/debian:bookworm' } });
 *   const run = m.exec(['apt-get', 'install', '-y', 'curl']);
 *   for await (const chunk of run) process.stdout.write(chunk.data);
 *   const { exitCode } = await run.wait();
 *   await m.files.write('/etc/app.conf', 'key=value');
 *   await m.stop();
 */
export class Hangar {
  /** The low-level client, one method per REST endpoint. */
  readonly client: HangarClient;

  constructor(opts: ClientOptions) {
    this.client = new HangarClient(opts);
  }

  readonly apps = {
    list: (opts?: CallOptions) => this.client.apps.list(opts).then((r) => r.apps),
    create: (name: string, opts?: CallOptions & { settings?: AppSettingsRequest }) => this.client.apps.create(name, opts),
    get: (name: string, opts?: CallOptions) => this.client.apps.get(name, opts),
    update: (name: string, settings: AppSettingsRequest, opts?: CallOptions) => this.client.apps.update(name, settings, opts),
    destroy: (name: string, opts?: CallOptions) => this.client.apps.delete(name, opts),
  };

  readonly machines = {
    create: async (app: string, req: CreateMachineRequest, opts?: CallOptions) => new Machine(this.client, app, await this.client.machines.create(app, req, opts)),
    get: async (app: string, id: string, opts?: CallOptions) => new Machine(this.client, app, await this.client.machines.get(app, id, opts)),
    list: async (app: string, opts?: CallOptions) => (await this.client.machines.list(app, opts)).map((m) => new Machine(this.client, app, m)),
  };

  /**
   * Sealed secrets for the tokenizer proxy:
   *   const { sealed, proxy } = await hangar.secrets.seal({ inject_processor: { token }, bearer_auth: { password }, allowed_hosts: ['api.github.com'] });
   * then in a machine: http_proxy=<proxy> with headers Proxy-Tokenizer: <sealed>, Proxy-Authorization: Bearer <password>.
   *
   * App secrets (transparent mode): machines see a placeholder, requests to the hosts carry the value:
   *   await hangar.secrets.set('my-app', { name: 'GH_TOKEN', value: token, hosts: ['api.github.com'] });
   */
  readonly secrets = {
    seal: (secret: SealRequest, opts?: CallOptions) => this.client.tokenizer.seal(secret, opts),
    publicKey: (opts?: CallOptions) => this.client.tokenizer.publicKey(opts),
    set: (app: string, secret: AppSecretInput, opts?: CallOptions) => this.client.secrets.set(app, secret, opts),
    list: (app: string, opts?: CallOptions) => this.client.secrets.list(app, opts),
    unset: (app: string, name: string, opts?: CallOptions) => this.client.secrets.unset(app, name, opts),
  };
}
