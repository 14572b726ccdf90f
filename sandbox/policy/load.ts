// Policies as data: a shipped name, a path or an object; `extends` chains resolved and merged, then validated.
import { closeSync, fstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PolicyError } from '../errors.js';
import { openRegularFollowing } from '../safe-open.js';
import { validateProfile } from '../seccomp/profile.js';
import { POLICY_OPTION_NAMES, type PolicyObject, type PolicyOptions, type SeccompProfile, type SeccompRule } from '../types.js';

/** Directory of the shipped policies. */
export const POLICY_DIR = fileURLToPath(new URL('../../../policies/', import.meta.url));
/** The policy a run gets when it names none. */
export const DEFAULT_POLICY = 'default';

export interface ResolvedPolicy {
  /** The name (shipped), the path, or "(object)". */
  name: string;
  /** Where each layer came from, most derived first. */
  chain: string[];
  description: string;
  options: PolicyOptions;
  seccomp: SeccompProfile | null;
}

const POLICY_KEYS = ['$schema', 'description', 'extends', 'options', 'seccomp'];
const OPTION_KEYS: readonly string[] = POLICY_OPTION_NAMES;
const MAX_DEPTH = 16;
const MAX_FILE = 1 << 20;

const isName = (s: string): boolean => /^[a-z][a-z0-9-]*$/.test(s);

/** Shipped policies with their descriptions. */
export function listPolicies(): { name: string; description: string }[] {
  return readdirSync(POLICY_DIR)
    .filter((f) => f.endsWith('.json') && f !== 'policy.schema.json')
    .sort()
    .map((f) => {
      const name = f.slice(0, -5);
      return { name, description: readPolicyFile(`${POLICY_DIR}${f}`, name).description ?? '' };
    });
}

function readPolicyFile(path: string, label: string): PolicyObject {
  let text: string;
  try {
    // Non-blocking open, regular files only: a fifo named as a policy is refused instead of hanging.
    const fd = openRegularFollowing(path);
    try {
      if (fstatSync(fd).size > MAX_FILE) throw new PolicyError(label, `${path} is larger than 1 MiB`);
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof PolicyError) throw e;
    const cause = (e as Error).cause as NodeJS.ErrnoException | undefined;
    const code = cause?.code ?? (e as NodeJS.ErrnoException).code;
    if (code === undefined) throw new PolicyError(label, (e as Error).message);
    const known = listNamesQuietly();
    throw new PolicyError(
      label,
      code === 'ENOENT' ? `not found (${path}); shipped policies: ${known}` : `cannot read ${path}: ${code ?? (e as Error).message}`,
    );
  }
  try {
    return JSON.parse(text) as PolicyObject;
  } catch (e) {
    const pos = /position (\d+)/.exec((e as Error).message)?.[1];
    throw new PolicyError(label, `${path} is not valid JSON${pos ? ` (at position ${pos})` : ''}`); // never echo the file's content
  }
}

function listNamesQuietly(): string {
  try {
    return readdirSync(POLICY_DIR)
      .filter((f) => f.endsWith('.json') && f !== 'policy.schema.json')
      .map((f) => f.slice(0, -5))
      .join(', ');
  } catch {
    return '(none found)';
  }
}

function checkShape(p: unknown, where: string): PolicyObject {
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new PolicyError(where, 'must be a JSON object');
  const o = p as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!POLICY_KEYS.includes(k)) throw new PolicyError(where, `unknown field "${k}" (allowed: ${POLICY_KEYS.join(', ')})`);
  if (o.description !== undefined && typeof o.description !== 'string') throw new PolicyError(where, '"description" must be a string');
  if (o.extends !== undefined && (typeof o.extends !== 'string' || o.extends.length === 0))
    throw new PolicyError(where, '"extends" must be a policy name or a path');
  if (o.options !== undefined) {
    if (typeof o.options !== 'object' || o.options === null || Array.isArray(o.options))
      throw new PolicyError(where, '"options" must be an object');
    for (const k of Object.keys(o.options))
      if (!OPTION_KEYS.includes(k))
        throw new PolicyError(where, `options.${k} cannot be set by a policy (allowed: ${OPTION_KEYS.join(', ')})`);
  }
  if (o.seccomp !== undefined && o.seccomp !== null && (typeof o.seccomp !== 'object' || Array.isArray(o.seccomp)))
    throw new PolicyError(where, '"seccomp" must be an object or null');
  return o as PolicyObject;
}

/** Child over parent: options shallow (env by key); seccomp fields replace, and a syscall the child names
 *  replaces every parent rule for it; `seccomp: null` removes the filter. */
function merge(parent: PolicyObject, child: PolicyObject): PolicyObject {
  const options: PolicyOptions = { ...parent.options, ...child.options };
  if (parent.options?.env || child.options?.env) options.env = { ...parent.options?.env, ...child.options?.env };
  if (parent.options?.limits || child.options?.limits) options.limits = { ...parent.options?.limits, ...child.options?.limits };
  let seccomp: Partial<SeccompProfile> | null | undefined = parent.seccomp;
  if (child.seccomp === null) seccomp = null;
  else if (child.seccomp !== undefined) {
    const base = parent.seccomp ?? {};
    const named = new Set((child.seccomp.syscalls ?? []).flatMap((r) => r.names));
    const inherited: SeccompRule[] = (base.syscalls ?? [])
      .map((r) => ({ ...r, names: r.names.filter((n) => !named.has(n)) }))
      .filter((r) => r.names.length > 0);
    seccomp = { ...base, ...child.seccomp, syscalls: [...inherited, ...(child.seccomp.syscalls ?? [])] };
  }
  const description = child.description ?? parent.description;
  return { ...(description !== undefined ? { description } : {}), options, seccomp };
}

/** Files read while loading a policy, so a cached result can be checked against them. */
let filesRead: string[] = [];

function loadLayer(spec: string | PolicyObject, base: string, chain: string[], depth: number): { obj: PolicyObject; chain: string[] } {
  if (depth > MAX_DEPTH) throw new PolicyError(chain[0] ?? '?', `extends is nested more than ${MAX_DEPTH} deep`);
  let label: string;
  let obj: PolicyObject;
  let dir = base;
  if (typeof spec === 'string') {
    const path = isName(spec) ? `${POLICY_DIR}${spec}.json` : isAbsolute(spec) ? spec : resolve(base, spec);
    label = isName(spec) ? spec : path;
    if (chain.includes(label)) throw new PolicyError(label, `extends cycle: ${[...chain, label].join(' -> ')}`);
    obj = checkShape(readPolicyFile(path, label), label);
    filesRead.push(path);
    dir = dirname(path);
  } else {
    label = '(object)';
    obj = checkShape(spec, label);
  }
  const here = [...chain, label];
  if (!obj.extends) return { obj, chain: here };
  const parent = loadLayer(obj.extends, dir, here, depth + 1);
  return { obj: merge(parent.obj, obj), chain: parent.chain };
}

const cache = new Map<string, { signature: string; files: string[]; policy: ResolvedPolicy }>();

/** Identity of the files a policy came from: a change to any of them invalidates the cached policy. */
function signature(files: string[]): string {
  return files
    .map((f) => {
      try {
        const st = statSync(f);
        return `${f}:${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch {
        return `${f}:gone`;
      }
    })
    .join('|');
}

/** Loads, merges and validates a policy. Names are shipped policies; paths are relative to `base`.
 *  Policies from files are cached until one of their files changes; the result must not be modified. */
export function loadPolicy(spec: string | PolicyObject, base = process.cwd()): ResolvedPolicy {
  if (typeof spec !== 'string' && (typeof spec !== 'object' || spec === null))
    throw new PolicyError(String(spec), 'must be a policy name, a path, or a policy object');
  const key = typeof spec === 'string' ? `${base}\0${spec}` : undefined;
  const hit = key !== undefined ? cache.get(key) : undefined;
  if (hit && signature(hit.files) === hit.signature) return hit.policy;
  filesRead = [];
  const policy = loadUncached(spec, base);
  if (key !== undefined) cache.set(key, { signature: signature(filesRead), files: filesRead, policy });
  return policy;
}

function loadUncached(spec: string | PolicyObject, base: string): ResolvedPolicy {
  const { obj, chain } = loadLayer(spec, base, [], 0);
  const name = chain[0]!;
  let seccomp: SeccompProfile | null = null;
  if (obj.seccomp) {
    try {
      seccomp = validateProfile(obj.seccomp, 'seccomp');
    } catch (e) {
      throw new PolicyError(name, (e as Error).message);
    }
    checkShadowing(seccomp, name);
  }
  return { name, chain, description: obj.description ?? '', options: obj.options ?? {}, seccomp };
}

/**
 * libseccomp silently drops argument-conditioned rules for a syscall that also has an unconditional rule
 * with another action; refuse such profiles instead of compiling something other than what they say.
 */
function checkShadowing(p: SeccompProfile, name: string): void {
  const unconditional = new Map<string, string>();
  p.syscalls.forEach((r) => {
    if (!r.args?.length) for (const n of r.names) unconditional.set(n, r.action);
  });
  p.syscalls.forEach((r, i) => {
    if (!r.args?.length) return;
    for (const n of r.names) {
      const u = unconditional.get(n);
      if (u !== undefined && u !== r.action)
        throw new PolicyError(
          name,
          `seccomp.syscalls[${i}] (${n} with args, ${r.action}) would be ignored: another rule gives ${n} ${u} unconditionally`,
        );
    }
  });
}
