import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { parseImageRef } from './image-ref.ts';

const DIGEST = `sha256:${'a'.repeat(64)}`;

test('Docker Hub short names expand to library/ on registry-1.docker.io', () => {
  const r = parseImageRef('alpine');
  assert.deepEqual(
    { name: r.name, domain: r.domain, apiHost: r.apiHost, repository: r.repository, tag: r.tag },
    { name: 'docker.io/library/alpine:latest', domain: 'docker.io', apiHost: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' },
  );
  assert.equal(parseImageRef('bitnami/redis:7').name, 'docker.io/bitnami/redis:7');
});

test('host:port registries, nested repositories, digests', () => {
  const r = parseImageRef('127.0.0.1:5000/team/web:1.2');
  assert.deepEqual([r.domain, r.apiHost, r.repository, r.tag], ['127.0.0.1:5000', '127.0.0.1:5000', 'team/web', '1.2']);
  const d = parseImageRef(`ghcr.io/o/app@${DIGEST}`);
  assert.deepEqual([d.name, d.tag, d.digest], [`ghcr.io/o/app@${DIGEST}`, undefined, DIGEST]);
  assert.equal(parseImageRef('localhost/x').domain, 'localhost');
});

test('hangar/ names are base images, not Docker Hub', () => {
  const r = parseImageRef('hangar/busybox');
  assert.deepEqual([r.isBase, r.name, r.domain], [true, 'hangar/busybox:latest', 'hangar']);
});

test('hangar/debian with no tag (or latest) is hangar/debian:bookworm, one image under both names', () => {
  for (const ref of ['hangar/debian', 'hangar/debian:latest', 'hangar/debian:bookworm']) assert.equal(parseImageRef(ref).name, 'hangar/debian:bookworm', ref);
  assert.equal(parseImageRef('hangar/debian:trixie').name, 'hangar/debian:trixie');
});

test('malformed references are invalid_image_ref', () => {
  for (const bad of ['', 'Alpine', 'a//b', 'a:b:c', 'x@sha256:abc', 'x@md5:' + 'a'.repeat(32), 'repo:-bad', 'a/../b', `${'a'.repeat(256)}`]) {
    assert.throws(() => parseImageRef(bad), (err) => isHangarError(err, 'invalid_image_ref') && !!err.hint, bad);
  }
});
