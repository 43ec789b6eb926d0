import { HangarError } from '../../protocol/errors.ts';
import { CreateTokenRequestSchema, RevokeTokenRequestSchema, TokenResponseSchema } from '../../protocol/token-caveats.ts';
import { attenuate, decodeToken } from '../../protocol/token-format.ts';
import { credentialOf } from '../../tokens/token-authority.ts';
import { route } from '../route.ts';
import { OkSchema } from './params.ts';

// Tokens that can only narrow: the admin token starts a family, any other token mints a child of
// itself (what the SDK's attenuate() does offline). Revoking one revokes it and its descendants.

export const tokenRoutes = [
  route({
    access: { action: 'read', anyToken: true },
    method: 'POST', path: '/v1/tokens', tag: 'Tokens', status: 201,
    summary:
      'Mint a token limited by caveats (apps with actions read|write|exec|control|delete, machines, commands, validity, from_machine). ' +
      'With the admin token, a new token family; with any other token, that token narrowed further (a token can never widen)',
    body: CreateTokenRequestSchema, bodyOptional: true, response: TokenResponseSchema,
    handler: async ({ services, access, body, headers }) => {
      const caveats = body?.caveats ?? [];
      if (access.grant.kind === 'admin') return { ...(await services.tokens.mint(caveats)), caveats };
      const token = await attenuate(credentialOf(headers.authorization), caveats);
      const { id, caveats: all } = decodeToken(token);
      return { token, id, caveats: all };
    },
  }),
  route({
    access: { action: 'read', anyToken: true },
    method: 'POST', path: '/v1/tokens/revoke', tag: 'Tokens',
    summary: 'Revoke a token and every token narrowed from it ({"token"}), or a whole family ({"id"}, admin token only). Kept across restarts',
    body: RevokeTokenRequestSchema, response: OkSchema,
    handler: async ({ services, access, body }) => {
      if ('token' in body) {
        await services.tokens.revoke(body.token);
        return { ok: true };
      }
      if (access.grant.kind !== 'admin') {
        throw new HangarError('token_denied', 'only the admin token may revoke a token family by id', {
          hint: 'revoke a token you hold by sending it: {"token": "hm1_…"}',
        });
      }
      await services.tokens.revokeFamily(body.id);
      return { ok: true };
    },
  }),
];
