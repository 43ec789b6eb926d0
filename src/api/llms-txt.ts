import { z } from 'zod';
import type { RouteDef } from './route.ts';
import { appUrlsText, type DaemonAddresses } from '../protocol/daemon-addresses.ts';

// GET /llms.txt: a concise description of the API for a model to read, generated from the same
// route table and schemas that serve requests, so it cannot drift from them.

export type ToolSummary = { name: string; description: string };

function fieldsOf(schema: z.ZodType | undefined): string {
  if (!schema) return '';
  const js = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, { type?: string | string[] }>; required?: string[] };
  const props = Object.entries(js.properties ?? {});
  if (props.length === 0) return '';
  return props
    .map(([name, p]) => `${name}${(js.required ?? []).includes(name) ? '' : '?'}${p.type ? `: ${[p.type].flat().join('|')}` : ''}`)
    .join(', ');
}

export function buildLlmsTxt(routes: RouteDef[], tools: ToolSummary[], addresses: DaemonAddresses): string {
  const byTag = new Map<string, RouteDef[]>();
  for (const r of routes) byTag.set(r.tag, [...(byTag.get(r.tag) ?? []), r]);
  const lines = [
    '# Hangar',
    '',
    '> Machines for AI coding agents: OCI images run isolated on one host, with a REST API shaped like the Fly Machines API.',
    '> Create a machine, build it up in place (exec, files), stop it (every file is kept), start it again in milliseconds.',
    '',
    'Auth: every call but /health, /openapi.json and /llms.txt needs `Authorization: Bearer <token>`.',
    'Errors: `{"error": "...", "code": "<machine_code>", "hint": "<what to do next>", "request_id": "..."}`; act on `code` and `hint`.',
    'Machine states: created, started, stopped, suspended, failed; transient: creating, starting, stopping, restarting, updating, destroying; destroyed.',
    `API: ${addresses.api_url}.`,
    `Serving: a machine whose config has services [{"internal_port": 8080}] is reachable through the edge proxy at ${appUrlsText(addresses)}${addresses.proxy_tls_url ? ' (for HTTPS, trust GET /v1/tls/ca.pem)' : ''};`,
    'a stopped machine wakes on the first request; `autostop: "stop"` stops idle ones after the app\'s autostop_idle; fly-force-instance-id pins a request to one machine.',
    'Full schemas: GET /openapi.json.',
    '',
  ];
  for (const [tag, defs] of byTag) {
    lines.push(`## ${tag}`, '');
    for (const d of defs) {
      const query = fieldsOf(d.query);
      const body = fieldsOf(d.body);
      lines.push(`- ${d.method} ${d.path}${query ? ` ?${query}` : ''}: ${d.summary}${body ? ` — body {${body}}` : ''}`);
    }
    lines.push('');
  }
  if (tools.length) {
    lines.push(
      '## MCP tools',
      '',
      'Streamable HTTP at /mcp (same bearer token), or stdio with `hangar mcp`. A failed call returns isError with the code and hint.',
      'Resources: hangar://apps/{app}/machines/{id}/config and hangar://apps/{app}/machines/{id}/logs.',
      '',
    );
    for (const t of tools) lines.push(`- ${t.name}: ${t.description}`);
    lines.push('');
  }
  return lines.join('\n');
}
