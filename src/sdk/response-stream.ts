// Streamed response bodies read piece by piece: NDJSON lines, or the data of server-sent events.

/** The pieces of a streamed response body between separators. */
export async function* splitStream(res: Response, separator: string): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf(separator)) >= 0) {
      yield buffer.slice(0, end);
      buffer = buffer.slice(end + separator.length);
    }
  }
}

/** The data of each server-sent event (its `data:` lines joined); comments (keep-alives) are passed over. */
export async function* eventData(res: Response): AsyncGenerator<string> {
  for await (const block of splitStream(res, '\n\n')) {
    const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    if (data.length) yield data.join('\n');
  }
}
