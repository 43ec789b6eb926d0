import { z } from 'zod';

// Wire types of the TLS certificates an app brings for its own hostnames (Hangar's own API).

export const UploadCertificateRequestSchema = z.strictObject({
  certificate: z.string().min(1).meta({ description: 'PEM chain: the server certificate first, then its intermediates' }),
  private_key: z.string().min(1).meta({ description: "PEM private key of the server certificate (unencrypted); it is never sent back" }),
});

export const CertificateSchema = z.object({
  hostname: z.string().meta({ description: 'A DNS name from the certificate\'s subjectAltName; `*.example.com` for a wildcard. Requests for it go to this app' }),
  app: z.string(),
  subject: z.string(),
  issuer: z.string(),
  not_before: z.string(),
  not_after: z.string(),
  fingerprint_sha256: z.string().meta({ description: 'SHA-256 of the certificate (DER), colon-separated hex' }),
  created_at: z.string(),
});

export const CertificateListSchema = z.object({ certificates: z.array(CertificateSchema) });

export type Certificate = z.infer<typeof CertificateSchema>;
