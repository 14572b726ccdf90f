// `cubicle network create|ls|rm`: private networks from the command line.
import { parseArgs } from 'node:util';
import { SandboxOptionError } from '../errors.js';
import { createNetwork, listNetworks, removeNetwork } from '../network/manage.js';
import { NetworkError } from '../network/registry.js';
import { UsageError } from './args.js';

export const NETWORK_USAGE = `Usage: cubicle network <command>

  create NAME [--subnet CIDR]   a private network (default subnet: the first free 10.89.N.0/24)
  ls [--json]                   your networks: name, subnet, state (up/down), sandboxes on it
  rm NAME                       remove a network: nothing can join it any more; sandboxes on it keep their
                                links until they end, and its holder exits with the last of them

Run sandboxes on it with: cubicle run --network NAME [--name SBX] -- CMD. Later sandboxes on the network
resolve SBX (/etc/hosts inside); sandboxes on other networks or none cannot reach it. Names: 1-63 of
[A-Za-z0-9_.-], starting with a letter or digit; 'none' and 'egress' are reserved.
`;

function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>, usage: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as {
      values: Record<string, string | boolean | undefined>;
      positionals: string[];
    };
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/\. To specify a positional.*$/s, '')} (${usage})`);
  }
}

async function ls(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, 'usage: cubicle network ls [--json]');
  if (positionals.length) throw new UsageError('usage: cubicle network ls [--json]');
  const list = await listNetworks();
  if (values.json) {
    process.stdout.write(JSON.stringify(list) + '\n');
    return 0;
  }
  process.stdout.write(`${'NAME'.padEnd(24)} ${'SUBNET'.padEnd(18)} ${'STATE'.padEnd(6)} SANDBOXES\n`);
  for (const n of list) process.stdout.write(`${n.name.padEnd(24)} ${n.subnet.padEnd(18)} ${n.state.padEnd(6)} ${n.sandboxes}\n`);
  return 0;
}

/** `cubicle network ...`; returns the exit code (2 for bad input, 1 when the network cannot be made or found). */
export async function cmdNetwork(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'create': {
        const usage = 'usage: cubicle network create NAME [--subnet CIDR]';
        const { values, positionals } = parse(rest, { subnet: { type: 'string' } }, usage);
        if (positionals.length !== 1) throw new UsageError(usage);
        const r = createNetwork(positionals[0], values.subnet as string | undefined);
        process.stdout.write(`${r.name} ${r.subnet}\n`);
        return 0;
      }
      case 'ls':
        return await ls(rest);
      case 'rm': {
        const usage = 'usage: cubicle network rm NAME';
        const { positionals } = parse(rest, {}, usage);
        if (positionals.length !== 1) throw new UsageError(usage);
        const r = await removeNetwork(positionals[0]);
        const left = r.sandboxes
          ? `; ${r.sandboxes} sandbox${r.sandboxes > 1 ? 'es' : ''} on it keep${r.sandboxes > 1 ? '' : 's'} their links ` +
            'until they end, and its holder exits with the last'
          : '';
        process.stderr.write(`cubicle: removed network ${r.name}${r.holder === 'gone' ? ' (its holder was already gone)' : left}\n`);
        return 0;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(NETWORK_USAGE);
        return sub === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown network command "${sub}"\n\n${NETWORK_USAGE}`);
    }
  } catch (e) {
    if (e instanceof SandboxOptionError) throw new UsageError(e.message);
    if (!(e instanceof NetworkError)) throw e;
    process.stderr.write(`cubicle: ${e.message}\n`);
    return 1;
  }
}
