// `cubicle doctor`: probe the host, diagnose it, and print what to fix.
import { diagnose, type DoctorCheck } from './diagnose.js';
import { probeHost } from './probe-run.js';

export { diagnose, type DoctorCheck, type DoctorStatus } from './diagnose.js';
export { formatDoctor, doctorExitCode } from './format.js';
export { probeHost } from './probe-run.js';
export type { HostFacts, Fact } from './facts.js';

/** Probes this host (including real sandbox runs) and returns every check, root causes first. */
export async function runDoctor(): Promise<DoctorCheck[]> {
  return diagnose(await probeHost());
}
