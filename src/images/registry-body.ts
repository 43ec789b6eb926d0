// Reading what a registry sends back without trusting it: bodies are read up to a limit (a hostile
// registry can send gigabytes where a manifest belongs), and text that ends up in an error message
// is cut short, stripped of control characters (terminal escapes, newlines that forge log lines)
// and of anything that looks like a credential the registry may echo back.

export const SNIPPET_CHARS = 200;
const SNIPPET_READ_BYTES = 1024;

/** The body, or undefined when it is longer than `maxBytes` (the rest is not read). */
export async function readCapped(res: Response, maxBytes: number): Promise<Buffer | undefined> {
  if (!res.body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return Buffer.concat(chunks, size);
      size += value.length;
      if (size > maxBytes) return undefined;
      chunks.push(value);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** The start of an error body as safe, short text; `secrets` are values this pull sent. */
export async function errorSnippet(res: Response, secrets: string[]): Promise<string> {
  if (!res.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body.getReader();
  try {
    while (size < SNIPPET_READ_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    // Whatever arrived before the failure is still worth showing.
  } finally {
    await reader.cancel().catch(() => {});
  }
  return sanitize(Buffer.concat(chunks, size).subarray(0, SNIPPET_READ_BYTES).toString('utf8'), secrets);
}

/** Text from a registry (a body, a header) made fit for an error message. */
export function sanitize(text: string, secrets: string[] = [], maxChars = SNIPPET_CHARS): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  out = out
    .replace(/\b(bearer|basic)\s+[\w.~+/=-]+/gi, '$1 [redacted]')
    .replace(/eyJ[\w-]+\.[\w-]+\.[\w-]*/g, '[redacted]')
    .replace(/("?(?:token|access_token|refresh_token|password|secret|authorization)"?\s*[:=]\s*)("[^"]*"|[^\s,;&"}]+)/gi, '$1[redacted]')
    // C0 and C1 controls, DEL, line/paragraph separators and bidi overrides.
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return out.length > maxChars ? `${out.slice(0, maxChars)}…` : out;
}
