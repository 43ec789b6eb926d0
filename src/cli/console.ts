import { CliError, connect } from './connect.ts';
import { parseFlags } from './args.ts';

// `hangar console ID`: an interactive shell in a started machine, like `fly ssh console`. The
// local terminal goes raw so keys (Ctrl-C included) reach the machine; resizes follow the window.

export const consoleUsage = `hangar console ID [--app APP] [-- CMD...]
  An interactive terminal in a started machine: bash if the image has it, else sh, or CMD.
  Exits with the command's exit code.`;

const DEFAULT_SHELL = ['/bin/sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi'];

export async function consoleCommand(argv: string[]): Promise<number> {
  const dashes = argv.indexOf('--');
  const { values, positionals } = parseFlags('console', {
    args: dashes >= 0 ? argv.slice(0, dashes) : argv,
    allowPositionals: true,
    options: { app: { type: 'string', default: process.env.HANGAR_APP ?? 'default' }, 'data-dir': { type: 'string' } },
  });
  const id = positionals[0];
  if (!id) throw new CliError('console needs a machine ID', 'hangar console ID');
  const command = dashes >= 0 && argv.length > dashes + 1 ? argv.slice(dashes + 1) : DEFAULT_SHELL;
  const client = connect(values['data-dir']);
  const { stdin, stdout } = process;
  const session = client.machines.execSession(values.app, id, {
    command,
    tty: true,
    rows: stdout.rows || 24,
    cols: stdout.columns || 80,
    env: { TERM: process.env.TERM || 'xterm-256color' },
  });
  session.onOutput((_stream, data) => stdout.write(data));
  const onResize = () => session.resize(stdout.rows, stdout.columns);
  stdout.on('resize', onResize);
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.on('data', (data: string) => session.write(data));
  stdin.on('end', () => session.closeStdin());
  try {
    const result = await session.result;
    if (result.stopped) process.stderr.write(`\r\nhangar: ${result.stopped.message}\r\nhint: ${result.stopped.hint}\r\n`);
    return result.exitCode;
  } finally {
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    stdout.off('resize', onResize);
  }
}
