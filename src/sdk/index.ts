export { HangarClient, type CallOptions, type ClientOptions, type ImageInfo, type ImageSummary } from './client.ts';
export { HangarApiError } from './errors.ts';
