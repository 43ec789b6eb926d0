import { readFileSync } from 'node:fs';
import { attenuate, inspectToken, TOKEN_ACTIONS, type Caveat, type TokenAction, type TokenLimits } from '../sdk/index.ts';
import { parseDurationMs } from '../protocol/duration.ts';
import { LimitsSchema } from '../protocol/limits.ts';
import { CliError, connect } from './connect.ts';
import { printJson } from './output.ts';
import { parseFlags } from './args.ts';

const LIMIT_NAMES = Object.keys(LimitsSchema.shape);

export const tokensUsage = `hangar tokens <command> [--json]
  create [CAVEATS]                            mint a token (with the admin token: a new one; with a narrowed
                                              HANGAR_TOKEN: that token narrowed further) and print it
  attenuate TOKEN|- CAVEATS                   narrow a token offline (no daemon needed); it can never widen
  inspect TOKEN|-                             show a token's id and caveats (offline; not whether it is valid)
  revoke TOKEN|- | revoke --id ID             revoke a token and every token narrowed from it; --id: a whole
                                              family (admin token). Kept across daemon restarts
CAVEATS (each flag adds one caveat; all must allow a call):
  --app APP[=ACTIONS]      only APP (repeat for more), with ACTIONS from ${TOKEN_ACTIONS.join(',')} (default all)
  --machine ID             only these machines (repeat for more); calls naming no machine may only read
  --command 'ARGV…'        exec only commands starting with these words (repeat); --exact-command: exactly these
  --ttl DURATION           works for this long (e.g. 30m, 24h)
  --from-machine ID        works only from inside machine ID (http://_api.internal:4280)
  --limit NAME=N           limits of this token and every token narrowed from it, together (repeat for more;
                           one caveat): ${LIMIT_NAMES.join(', ')}
Send a token as Authorization: Bearer TOKEN (or FlyV1 TOKEN). A TOKEN of - is read from stdin.`;

const CAVEAT_OPTIONS = {
  app: { type: 'string', multiple: true },
  machine: { type: 'string', multiple: true },
  command: { type: 'string', multiple: true },
  'exact-command': { type: 'string', multiple: true },
  ttl: { type: 'string' },
  'from-machine': { type: 'string' },
  limit: { type: 'string', multiple: true },
} as const;

type CaveatFlags = { app?: string[]; machine?: string[]; command?: string[]; 'exact-command'?: string[]; ttl?: string; 'from-machine'?: string; limit?: string[] };

export async function tokens(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseFlags('tokens', {
    args: rest,
    allowPositionals: true,
    options: { ...CAVEAT_OPTIONS, json: { type: 'boolean', default: false }, 'data-dir': { type: 'string' }, id: { type: 'string' } },
  });
  const caveats = caveatsOf(values);
  switch (verb) {
    case 'create': {
      const minted = await connect(values['data-dir']).tokens.create(caveats);
      if (values.json) printJson(minted);
      else process.stdout.write(minted.token + '\n');
      return 0;
    }
    case 'attenuate': {
      if (caveats.length === 0) fail('tokens attenuate needs at least one caveat flag', tokensUsage);
      const token = await attenuate(tokenArg(positionals[0]), caveats).catch((err: Error) => fail(err.message));
      if (values.json) printJson({ token, ...inspectToken(token) });
      else process.stdout.write(token + '\n');
      return 0;
    }
    case 'inspect': {
      let body;
      try {
        body = inspectToken(tokenArg(positionals[0]));
      } catch (err) {
        fail((err as Error).message, 'the admin token (hgr_…) has no caveats to show; narrowed tokens start with hm1_');
      }
      if (values.json) printJson({ id: body.id, caveats: body.caveats });
      else process.stdout.write(`id: ${body.id}\n${body.caveats.map((c, i) => `caveat ${i + 1}: ${describeCaveat(c)}\n`).join('') || 'no caveats (may do all the admin token may)\n'}`);
      return 0;
    }
    case 'revoke': {
      const client = connect(values['data-dir']);
      await client.tokens.revoke(values.id ? { id: values.id } : { token: tokenArg(positionals[0]) });
      if (!values.json) process.stdout.write(values.id ? `revoked token family ${values.id}\n` : 'revoked the token and every token narrowed from it\n');
      return 0;
    }
    default:
      fail(`unknown command: tokens ${verb ?? ''}`.trim(), tokensUsage);
  }
}

function caveatsOf(flags: CaveatFlags): Caveat[] {
  const caveats: Caveat[] = [];
  if (flags.app?.length) {
    const apps: Record<string, TokenAction[]> = {};
    for (const spec of flags.app) {
      const [name, actions] = spec.split('=', 2) as [string, string | undefined];
      const list = actions === undefined ? [...TOKEN_ACTIONS] : actions.split(',').filter(Boolean);
      const unknown = list.filter((a) => !(TOKEN_ACTIONS as readonly string[]).includes(a));
      if (!name || unknown.length) fail(`--app ${spec}: ${name ? `unknown action ${unknown.join(', ')}` : 'no app name'}`, `write --app APP or --app APP=${TOKEN_ACTIONS.join(',')}`);
      apps[name] = list as TokenAction[];
    }
    caveats.push({ type: 'apps', apps });
  }
  if (flags.machine?.length) caveats.push({ type: 'machines', machines: flags.machine });
  const commands = [
    ...(flags.command ?? []).map((c) => ({ argv: words(c), prefix: true })),
    ...(flags['exact-command'] ?? []).map((c) => ({ argv: words(c) })),
  ];
  if (commands.length) caveats.push({ type: 'commands', commands });
  if (flags.ttl !== undefined) {
    const ms = parseDurationMs(flags.ttl);
    if (ms === undefined) fail(`--ttl ${flags.ttl} is not a duration`, 'write e.g. --ttl 30m or --ttl 24h');
    caveats.push({ type: 'validity', not_after: Math.floor((Date.now() + ms) / 1000) });
  }
  if (flags['from-machine']) caveats.push({ type: 'from_machine', machine: flags['from-machine'] });
  if (flags.limit?.length) caveats.push({ type: 'limits', limits: limitsOf(flags.limit) });
  return caveats;
}

function limitsOf(specs: string[]): TokenLimits {
  const given: Record<string, number> = {};
  for (const spec of specs) {
    const [name = '', value = ''] = spec.split('=', 2);
    given[name] = value.trim() === '' ? Number.NaN : Number(value);
  }
  const parsed = LimitsSchema.safeParse(given);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    fail(`--limit ${issue.path.join('.') || specs.join(' ')}: ${issue.message}`, `write --limit NAME=N, NAME one of ${LIMIT_NAMES.join(', ')}`);
  }
  return parsed.data;
}

function words(command: string): string[] {
  const argv = command.trim().split(/\s+/).filter(Boolean);
  if (argv.length === 0) fail('--command needs at least one word');
  return argv;
}

function tokenArg(arg: string | undefined): string {
  if (!arg) fail('this command needs a TOKEN (or - to read it from stdin)', tokensUsage);
  return (arg === '-' ? readFileSync(0, 'utf8') : arg).trim();
}

function describeCaveat(c: Caveat): string {
  switch (c.type) {
    case 'apps': return `apps ${Object.entries(c.apps).map(([app, actions]) => `${app}=${actions.join(',') || '(nothing)'}`).join(' ')}`;
    case 'machines': return `machines ${c.machines.join(' ')}`;
    case 'commands': return `commands ${c.commands.map((r) => JSON.stringify(r.argv) + (r.prefix ? ' and more' : ' exactly')).join('; ')}`;
    case 'validity': return `valid ${c.not_before !== undefined ? `from ${new Date(c.not_before * 1000).toISOString()} ` : ''}${c.not_after !== undefined ? `until ${new Date(c.not_after * 1000).toISOString()}` : ''}`.trim();
    case 'from_machine': return `only from inside machine ${c.machine}`;
    case 'limits': return `limits ${Object.entries(c.limits).map(([k, v]) => `${k}=${v}`).join(' ')} (for it and every token narrowed from it, together)`;
  }
}

function fail(message: string, hint?: string): never {
  throw new CliError(message, hint);
}
