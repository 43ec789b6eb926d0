import { HangarError } from '../protocol/errors.ts';
import type { Caveat, CommandRule, TokenAction } from '../protocol/token-format.ts';
import type { Grant } from '../tokens/token-authority.ts';
import type { ApiServices } from './services.ts';

// The one place a token's caveats meet a request. Each route declares what it does (RouteAccess,
// in route.ts); the server builds the need from the route's path and body and asks check(),
// before the handler runs, for REST and WebSocket routes alike. MCP calls come back through REST.

export type RouteAccess = {
  /** What the route does to its app, or to the daemon when its path names no app. */
  action: TokenAction;
  /** The app is named by the body's `app_name` (POST /v1/apps) rather than the path. */
  appInBody?: boolean;
  /** The argv an exec route runs (from its body, or the session it writes to). Asked only of
   * tokens with a commands caveat. A WebSocket exec checks its start message itself, with
   * ctx.access.checkCommand. */
  command?: (call: { body: never; params: never; services: ApiServices }) => string[] | undefined | Promise<string[] | undefined>;
  /** Shows every app's things (GET /metrics): needs a token no caveat limits to apps or machines. */
  everyApp?: boolean;
  /** Needs only a valid token (minting a narrower one, revoking one's own): only the validity
   * and from_machine caveats apply. */
  anyToken?: boolean;
};

/** Where a request came from, as the daemon knows it (never from a header the client sets). */
export type RequestOrigin = { machineIp?: string };

export type MachineLookup = {
  /** The machine a path names (id or name) in an app, if it exists. */
  find(app: string, idOrName: string): { id: string } | undefined;
  /** The private address of a machine that exists and has one. */
  privateIp(id: string): string | undefined;
};

/** `command` null: the route runs a command that could not be told (a session that is not there). */
export type Need = { action: TokenAction; app?: string; machine?: string; command?: string[] | null; everyApp?: boolean; anyToken?: boolean };

export class Access {
  readonly grant: Grant;
  readonly origin: RequestOrigin;
  readonly #machines: MachineLookup;
  readonly #nowS: () => number;

  constructor(grant: Grant, origin: RequestOrigin, machines: MachineLookup, nowS = () => Date.now() / 1000) {
    this.grant = grant;
    this.origin = origin;
    this.#machines = machines;
    this.#nowS = nowS;
  }

  /** Throws token_denied naming the first caveat that does not allow `need`. */
  check(need: Need): void {
    if (this.grant.kind === 'admin') return;
    this.grant.caveats.forEach((caveat, index) => {
      const why = this.#refusal(caveat, need);
      if (why) throw denied(caveat, index, why);
    });
  }

  /** For a WebSocket exec, whose command arrives after the route's check. */
  checkCommand(app: string, machine: string, argv: string[]): void {
    this.check({ action: 'exec', app, machine, command: argv });
  }

  /** Whether a commands caveat applies, so a route's command must be found out. */
  get limitsCommands(): boolean {
    return this.grant.kind === 'token' && this.grant.caveats.some((c) => c.type === 'commands');
  }

  /** Whether a list may show this app (GET /v1/apps answers with the token's apps only). */
  allowsApp(app: string): boolean {
    if (this.grant.kind === 'admin') return true;
    return this.grant.caveats.every((c) => c.type !== 'apps' || c.apps[app] !== undefined);
  }

  #refusal(c: Caveat, need: Need): string | undefined {
    switch (c.type) {
      case 'validity': {
        const now = this.#nowS();
        if (c.not_before !== undefined && now < c.not_before) return `it is not valid before ${iso(c.not_before)}`;
        if (c.not_after !== undefined && now >= c.not_after) return `it expired at ${iso(c.not_after)}`;
        return undefined;
      }
      case 'from_machine': {
        const ip = this.#machines.privateIp(c.machine);
        if (!this.origin.machineIp) return `it may only be used from inside machine ${c.machine} (through its _api.internal), and this request came from the host`;
        if (!ip || ip !== this.origin.machineIp) return `it may only be used from machine ${c.machine}, and this request came from ${this.origin.machineIp}`;
        return undefined;
      }
      case 'apps': {
        if (need.anyToken) return undefined;
        if (need.app === undefined) {
          if (need.everyApp) return 'it is limited to apps, and this shows every app';
          return need.action === 'read' ? undefined : `it is limited to apps (${Object.keys(c.apps).join(', ') || 'none'}), and this ${need.action}s outside any app`;
        }
        const actions = c.apps[need.app];
        if (!actions) return `it does not name app ${need.app} (it allows ${Object.keys(c.apps).join(', ') || 'no app'})`;
        return actions.includes(need.action) ? undefined : `it allows ${actions.join(', ') || 'nothing'} on app ${need.app}, not ${need.action}`;
      }
      case 'machines': {
        if (need.anyToken) return undefined;
        if (need.machine === undefined) {
          if (need.everyApp) return 'it is limited to machines, and this shows every app';
          return need.action === 'read' ? undefined : `it is limited to machines (${c.machines.join(', ')}), and this ${need.action}s no one machine`;
        }
        const id = need.app === undefined ? undefined : this.#machines.find(need.app, need.machine)?.id;
        return id !== undefined && c.machines.includes(id) ? undefined : `it does not name machine ${need.machine} (it allows ${c.machines.join(', ')})`;
      }
      case 'limits':
        // Not a refusal of a kind of call: machines/limits.ts counts what the token holds.
        return undefined;
      case 'commands': {
        if (need.command === undefined) return undefined;
        if (need.command === null) return 'it limits commands, and the command this runs could not be told';
        return c.commands.some((rule) => matches(rule, need.command!)) ? undefined : `it does not allow the command ${JSON.stringify(need.command)}`;
      }
    }
  }
}

function matches(rule: CommandRule, argv: string[]): boolean {
  if (rule.prefix ? argv.length < rule.argv.length : argv.length !== rule.argv.length) return false;
  return rule.argv.every((arg, i) => argv[i] === arg);
}

function iso(unixS: number): string {
  return new Date(unixS * 1000).toISOString();
}

function denied(caveat: Caveat, index: number, why: string): HangarError {
  return new HangarError('token_denied', `token denied by its ${caveat.type} caveat (#${index + 1}): ${why}`, {
    hint: 'this token was narrowed and cannot be widened; use a token that allows this (`hangar tokens inspect TOKEN` lists its caveats)',
    details: { caveat, caveat_index: index },
  });
}
