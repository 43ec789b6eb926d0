import { z } from 'zod';
import { GuestPathSchema } from './schemas.ts';

// Watching a machine's files on the wire (a Hangar extension of the Machines API).

export const FileWatchQuerySchema = z.object({
  path: GuestPathSchema.meta({ description: 'Directory to watch, absolute inside the machine' }),
  recursive: z.stringbool().default(false).meta({ description: 'Also every directory below it, and those made later' }),
});

const KIND = z.enum(['file', 'directory', 'symlink', 'other']);

/** What a watch stream carries, one message per line of SSE data or per WebSocket message. */
export const FileWatchMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), path: z.string(), recursive: z.boolean(), directories: z.number() })
    .meta({ description: 'Every directory is watched: what happens from here on is reported' }),
  z.object({ type: z.literal('create'), path: z.string(), kind: KIND.optional() }),
  z.object({ type: z.literal('modify'), path: z.string(), kind: KIND.optional() }),
  z.object({ type: z.literal('delete'), path: z.string(), kind: KIND.optional() }),
  z.object({ type: z.literal('rename'), path: z.string().meta({ description: 'Where it went' }), from: z.string(), kind: KIND.optional() }),
  z.object({ type: z.literal('overflow'), dropped: z.number() }).meta({ description: 'Events came faster than they could be read; some were lost' }),
  z.object({ type: z.literal('unwatched'), path: z.string(), reason: z.string() }).meta({ description: 'A new directory that is not watched' }),
  z.object({ type: z.literal('end'), reason: z.string() }).meta({ description: 'The last message: the machine stopped, or the directory went' }),
]);

export type FileWatchMessage = z.infer<typeof FileWatchMessageSchema>;
export type FileChange = Extract<FileWatchMessage, { type: 'create' | 'modify' | 'delete' | 'rename' }>;
