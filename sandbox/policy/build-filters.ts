#!/usr/bin/env node
// Compiles the shipped policies' filters into dist/seccomp-filters (`npm run build`): runs of a shipped policy
// then load no libseccomp. Without libseccomp on the build host nothing is written (runs compile as before).
import { rmSync } from 'node:fs';
import { listPolicies, loadPolicy } from './load.js';
import { prebuildFilters } from '../seccomp/compile.js';
import { libseccompStatus } from '../seccomp/libseccomp.js';
import { PREBUILT_FILTER_DIR } from '../seccomp/prebuilt.js';

rmSync(PREBUILT_FILTER_DIR, { recursive: true, force: true });
const status = libseccompStatus();
if (!status.ok) console.error(`cubicle: no prebuilt seccomp filters (${status.error}); runs will compile them with libseccomp`);
else {
  const profiles = listPolicies().flatMap(({ name }) => loadPolicy(name).seccomp ?? []);
  prebuildFilters(profiles);
}
