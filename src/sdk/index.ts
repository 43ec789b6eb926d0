export { HangarClient, type CallOptions, type ClientOptions } from './client.ts';
export { HangarApiError } from './errors.ts';
