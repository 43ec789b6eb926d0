import { HangarError } from '../protocol/errors.ts';

// Image references follow Docker's grammar (distribution/reference) so that a name a robot copies
// from a Dockerfile or a Fly config means the same thing here. One deliberate exception: the
// `hangar/` namespace names Hangar's own base images and never reaches Docker Hub.

export type ParsedRef = {
  /** Registry as written in the name (`docker.io`, `127.0.0.1:5000`); `hangar` for base images. */
  domain: string;
  /** Host the registry API is served from (`registry-1.docker.io` for Docker Hub). */
  apiHost: string;
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
  /** Canonical name: `domain/repository:tag`, or `domain/repository@digest` when pinned. */
  name: string;
  isBase: boolean;
};

/** Base image tags that name another: `hangar/debian` is Debian's stable suite, one image under either name. */
const BASE_TAG_ALIASES: Record<string, string> = { 'hangar/debian:latest': 'bookworm' };

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$/;

export function parseImageRef(input: string): ParsedRef {
  const bad = (why: string) =>
    new HangarError('invalid_image_ref', `invalid image reference "${input}": ${why}`, {
      hint: 'use NAME[:TAG] or NAME@sha256:<64 hex>, e.g. "alpine", "127.0.0.1:5000/team/app:1"',
      details: { ref: input },
    });
  if (input.length === 0 || input.length > 512) throw bad('empty or too long');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad('the digest must be sha256: followed by 64 lowercase hex characters');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`the tag "${tag}" is not valid`);
  }

  const parts = rest.split('/');
  let domain = 'docker.io';
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    domain = first;
    parts.shift();
    if (!DOMAIN.test(domain)) throw bad(`the registry "${domain}" is not a valid host[:port]`);
  }
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) {
    throw bad('repository names are lowercase letters, digits and separators (. _ __ -) between slashes');
  }
  if (domain === 'docker.io' && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw bad('the repository name is longer than 255 characters');

  const isBase = domain === 'docker.io' && parts[0] === 'hangar';
  if (isBase) domain = 'hangar';
  if (!tag && !digest) tag = 'latest';
  if (isBase) tag = BASE_TAG_ALIASES[`${repository}:${tag}`] ?? tag;
  const apiHost = domain === 'docker.io' ? 'registry-1.docker.io' : domain;
  const base = isBase ? repository : `${domain}/${repository}`;
  const name = digest && !tag ? `${base}@${digest}` : `${base}:${tag}`;
  return { domain, apiHost, repository, tag, digest, name, isBase };
}

/**
 * A name to store a new image under (a commit): a registry name with a tag, never a digest (the
 * digest is what the commit makes) and never a `hangar/` base name (those are built here).
 */
export function parseTargetRef(input: string): ParsedRef {
  const parsed = parseImageRef(input);
  const bad = (why: string, hint: string) => new HangarError('invalid_image_ref', `cannot commit to "${input}": ${why}`, { hint, details: { ref: input } });
  if (parsed.isBase) throw bad('hangar/ names the built-in base images', 'name it after the registry it belongs to, e.g. 127.0.0.1:5000/team/app:v2');
  if (parsed.digest) throw bad('a digest cannot be chosen, it is what the commit makes', 'give a tag instead: REGISTRY/REPO:TAG');
  return parsed;
}
