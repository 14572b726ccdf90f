// The doctor's host knowledge: probe the host's state, diagnose it (pure), format the checks. The command that
// adds real sandbox runs to these facts is cli/doctor-probes.ts.
export { diagnose, type DoctorCheck, type DoctorStatus } from './diagnose.js';
export { formatDoctor, doctorExitCode } from './format.js';
export type { HostFacts, Fact } from './facts.js';
