import { z } from 'zod';
import { CertificateListSchema, UploadCertificateRequestSchema } from '../../protocol/certificates.ts';
import { HANDLED, route } from '../route.ts';
import { AppParams, OkSchema } from './params.ts';

// HTTPS on the edge proxy: the CA that clients trust for `<app>.<domain>`, and the certificates
// an app brings for hostnames of its own.

const TAG = 'TLS';

export const certificateRoutes = [
  route({
    method: 'GET', path: '/v1/tls/ca.pem', tag: TAG, public: true,
    summary: "Hangar's CA certificate (no auth): trust it to reach https://<app>.localhost on the proxy's TLS port, e.g. curl --cacert ca.pem",
    produces: 'application/x-pem-file',
    handler: ({ services, reply }) => {
      void reply.type('application/x-pem-file').send(services.tls.ca.certPem);
      return HANDLED;
    },
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/certificates', tag: TAG, status: 201,
    summary: "Upload a certificate and key for the app: the proxy serves it for the hostnames it names (subjectAltName) and sends their requests to the app",
    params: AppParams, body: UploadCertificateRequestSchema, response: CertificateListSchema,
    handler: async ({ services, params, body }) => {
      const app = services.apps.get(params.app_name);
      const tls = services.tls;
      return { certificates: await tls.certificates.add(app.name, app.id, body.certificate, body.private_key, tls.reservedFor(app.name)) };
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/certificates', tag: TAG, summary: "The app's uploaded certificates, one per hostname (never the keys)",
    params: AppParams, response: CertificateListSchema,
    handler: ({ services, params }) => {
      services.apps.get(params.app_name);
      return { certificates: services.tls.certificates.list(params.app_name) };
    },
  }),
  route({
    access: { action: 'delete' },
    method: 'DELETE', path: '/v1/apps/{app_name}/certificates/{hostname}', tag: TAG,
    summary: 'Stop serving the uploaded certificate for a hostname (and routing it to the app)',
    params: AppParams.extend({ hostname: z.string().min(1) }), response: OkSchema,
    handler: async ({ services, params }) => {
      services.apps.get(params.app_name);
      await services.tls.certificates.remove(params.app_name, params.hostname);
      return { ok: true };
    },
  }),
];
