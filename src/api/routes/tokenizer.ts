import { PublicKeyResponseSchema, SealRequestSchema, SealResponseSchema } from '../../protocol/sealed-secret.ts';
import { route } from '../route.ts';

// Sealing secrets for the tokenizer proxy. There is no route that opens one.

const TAG = 'Tokenizer';

export const tokenizerRoutes = [
  route({
    method: 'GET', path: '/v1/tokenizer/public_key', tag: TAG,
    summary: "The tokenizer's seal key (hex X25519 public key): seal secrets to it with a NaCl anonymous sealed box, as for Fly's tokenizer",
    response: PublicKeyResponseSchema,
    access: { action: 'read', anyToken: true },
    handler: ({ services }) => ({ seal_key: services.tokenizer.sealKey, proxy: services.tokenizer.proxyUrl }),
  }),
  route({
    method: 'POST', path: '/v1/tokenizer/seal', tag: TAG,
    summary: "Seal a secret (Fly tokenizer format) to the tokenizer's key. Machines then send requests through the tokenizer proxy with Proxy-Tokenizer: <sealed> and it injects the credential, only towards the allowed hosts. The answer never contains the credential",
    body: SealRequestSchema, response: SealResponseSchema,
    // Sealing encrypts to a public key and grants nothing: any valid token may.
    access: { action: 'read', anyToken: true },
    handler: ({ services, body }) => services.tokenizer.seal(body),
  }),
];
