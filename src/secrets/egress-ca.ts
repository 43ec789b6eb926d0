import { loadOrCreateCaFiles, type CertificateAuthority } from '../proxy/tls/ca.ts';

// The CA of the egress proxy, which machines of apps with secrets trust so that their requests to
// a secret's hosts can be opened to swap placeholders for values. It is not the edge proxy's CA
// (which clients outside trust, and which is name-constrained to the apps' domain): this one must
// vouch for any host a secret names, so only machines trust it, and its key (mode 600) never
// leaves the data dir. Its leaves are made per SNI name, only for names the asking machine's app
// has a secret for.

/** Loads `<dir>/ca.pem` and `<dir>/ca-key.pem`, creating both (key 0600, dir 0700) when absent. */
export function loadOrCreateEgressCa(dir: string): Promise<CertificateAuthority> {
  return loadOrCreateCaFiles(dir, { label: 'Hangar egress CA', extensions: [] });
}
