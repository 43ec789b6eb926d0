import { z } from 'zod';
import { checkFields, fieldTreeOf, type FieldTree } from './config-fields.ts';
import { HangarError } from './errors.ts';
import { FLY_MACHINE_REQUEST_FIELDS } from './fly-machine-fields.ts';
import { UpdateMachineRequestSchema } from './schemas.ts';

// The field check of machine create and update requests (config-fields.ts), with Hangar's own
// fields read from the schema that validates them, so a field added there is known here.

let hangarFields: FieldTree | undefined;

function hangarTree(): FieldTree {
  return (hangarFields ??= fieldTreeOf(z.toJSONSchema(UpdateMachineRequestSchema, { io: 'input', unrepresentable: 'any' }) as never) as FieldTree);
}

/** Refuses a request with fields of neither Hangar's schema nor Fly's; answers a warning for each Fly field Hangar ignores. */
export function checkMachineRequestFields(body: unknown): string[] {
  const { unknown, unimplemented } = checkFields(body, hangarTree(), FLY_MACHINE_REQUEST_FIELDS);
  if (unknown.length > 0) {
    const named = unknown.map((u) => `${u.path}${u.suggestion ? ` (did you mean ${u.suggestion}?)` : ''}`);
    throw new HangarError('validation_failed', `unknown field${unknown.length > 1 ? 's' : ''} ${named.join(', ')}`, {
      hint: "rename or remove the fields named; a machine's fields are MachineConfig in GET /openapi.json (Fly's, plus rootfs)",
      details: { issues: unknown.map((u) => ({ path: u.path, message: 'unknown field', ...(u.suggestion ? { suggestion: u.suggestion } : {}) })) },
    });
  }
  return unimplemented.map((path) => `${path} is part of Fly's machine config that Hangar does not implement yet: it is kept, and has no effect`);
}
