import { z } from 'zod';

// Where a daemon serves, as robots need it in text: the API, and the edge proxy apps are reached
// through. Text that names a port takes it from here, so it is right whatever the daemon listens on.

export const DaemonAddressesSchema = z.object({
  api_url: z.string().meta({ description: 'The REST API (and /mcp)' }),
  proxy_url: z.string().optional().meta({ description: 'The edge proxy over HTTP; absent when it does not run' }),
  proxy_tls_url: z.string().optional().meta({ description: 'The edge proxy over HTTPS; absent when it does not serve HTTPS' }),
  app_domain: z.string().meta({ description: 'An app is reached as <app>.<app_domain> on the proxy' }),
});

export type DaemonAddresses = z.infer<typeof DaemonAddressesSchema>;

/** An app's URLs through the edge proxy: HTTP, then HTTPS, as far as the proxy serves them. */
export function appUrls(a: DaemonAddresses, app: string): string[] {
  return [a.proxy_url, a.proxy_tls_url].flatMap((listen) => {
    const parts = listen && /^(https?):\/\/.*?(?::(\d+))?$/.exec(listen);
    if (!parts) return [];
    return [`${parts[1]}://${app}.${a.app_domain}${parts[2] ? `:${parts[2]}` : ''}`];
  });
}

/** How text names an app's address: the real URLs, or what to look for when they are unknown. */
export function appUrlsText(a: DaemonAddresses | undefined): string {
  if (!a) return "http://<app>.localhost:<proxy port> (the proxy address `hangar serve` printed)";
  const urls = appUrls(a, '<app>');
  return urls.length ? urls.join(' and ') : "nowhere yet: this daemon runs no edge proxy (start it with --proxy-listen)";
}
