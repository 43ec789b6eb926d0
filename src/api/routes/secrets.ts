import { AppSecretListSchema, AppSecretRequestSchema, AppSecretSchema, SecretParams } from '../../protocol/app-secrets.ts';
import { route } from '../route.ts';
import { AppParams } from './params.ts';

// App secrets (transparent mode): set, list and remove. No route answers with a value.

const TAG = 'Secrets';

export const secretRoutes = [
  route({
    method: 'POST', path: '/v1/apps/{app_name}/secrets', tag: TAG, status: 201,
    summary: "Set an app secret: machines of the app see only a placeholder in env var `name` (at create and at each start), and the gateway's egress proxy " +
      'puts the value into requests to `hosts` in its place (and into inject.header when given). Setting it again replaces the value and keeps the placeholder. The answer never contains the value',
    params: AppParams, body: AppSecretRequestSchema, response: AppSecretSchema,
    access: { action: 'write' },
    handler: ({ services, params, body }) => services.secrets.set(params.app_name, body),
  }),
  route({
    method: 'GET', path: '/v1/apps/{app_name}/secrets', tag: TAG,
    summary: "The app's secrets: names, hosts, inject rules and placeholders, never values",
    params: AppParams, response: AppSecretListSchema,
    access: { action: 'read' },
    handler: ({ services, params }) => ({ secrets: services.secrets.list(params.app_name) }),
  }),
  route({
    method: 'GET', path: '/v1/apps/{app_name}/secrets/{secret_name}', tag: TAG,
    summary: 'One app secret, without its value',
    params: SecretParams, response: AppSecretSchema,
    access: { action: 'read' },
    handler: ({ services, params }) => services.secrets.get(params.app_name, params.secret_name),
  }),
  route({
    method: 'DELETE', path: '/v1/apps/{app_name}/secrets/{secret_name}', tag: TAG, status: 204,
    summary: 'Remove an app secret: its placeholder is replaced no more (at once), and leaves machines\' env at their next start',
    params: SecretParams,
    access: { action: 'write' },
    handler: ({ services, params }) => {
      services.secrets.delete(params.app_name, params.secret_name);
      return undefined;
    },
  }),
];
