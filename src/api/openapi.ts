import { z } from 'zod';
import { ErrorBodySchema } from '../protocol/schemas.ts';
import type { RouteDef } from './route.ts';

// /openapi.json, derived from the same route table and zod schemas that validate requests.

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): object {
  return z.toJSONSchema(schema, { io, unrepresentable: 'any' });
}

function parameters(def: RouteDef): object[] {
  const out: object[] = [];
  const add = (schema: z.ZodType | undefined, where: 'path' | 'query') => {
    if (!schema) return;
    const js = jsonSchema(schema, 'input') as { properties?: Record<string, object>; required?: string[] };
    for (const [name, s] of Object.entries(js.properties ?? {})) {
      out.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: s });
    }
  };
  add(def.params, 'path');
  add(def.query, 'query');
  return out;
}

/**
 * A route's operationId, from its method and path, so generated clients get stable names and a new
 * route needs nothing more: `POST /v1/apps/{app_name}/machines/{machine_id}/start` is
 * postAppMachineStart (a collection named before one of its ids is singular).
 */
export function operationIdOf(def: RouteDef): string {
  const segments = def.path.split('/').filter((s) => s && s !== 'v1');
  const words = segments.flatMap((s, i) => {
    if (s.startsWith('{')) return [];
    const beforeId = segments[i + 1]?.startsWith('{') ?? false;
    return s.split(/[^a-zA-Z0-9]+/).filter(Boolean).map((w, j, all) => (beforeId && j === all.length - 1 ? w.replace(/s$/, '') : w));
  });
  return def.method.toLowerCase() + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

export function buildOpenApi(routes: RouteDef[], serverUrl: string): object {
  const paths: Record<string, Record<string, object>> = {};
  const operationIds = new Set<string>();
  for (const def of routes) {
    const operationId = operationIdOf(def);
    if (operationIds.has(operationId)) throw new Error(`two routes have the operationId ${operationId}; rename one's path`);
    operationIds.add(operationId);
    const status = String(def.status ?? 200);
    const success = def.response
      ? { description: 'OK', content: { [def.produces?.split(',')[0]?.trim() ?? 'application/json']: { schema: jsonSchema(def.response, 'output') } } }
      : { description: 'OK' };
    (paths[def.path] ??= {})[def.method.toLowerCase()] = {
      operationId,
      summary: def.summary,
      tags: [def.tag],
      parameters: parameters(def),
      ...(def.body
        ? { requestBody: { required: !def.bodyOptional, content: { 'application/json': { schema: jsonSchema(def.body, 'input') } } } }
        : {}),
      ...(def.consumes ? { requestBody: { required: true, content: { [def.consumes]: { schema: { type: 'string', format: 'binary' } } } } } : {}),
      responses: {
        [status]: success,
        default: { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
      ...(def.public ? { security: [] } : {}),
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Hangar Machines API', version: '1', description: 'Shaped like the Fly Machines API; errors carry a code and a hint.' },
    servers: [{ url: serverUrl }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: jsonSchema(ErrorBodySchema, 'output') },
    },
    paths,
  };
}
