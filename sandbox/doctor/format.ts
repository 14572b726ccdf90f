// Renders doctor checks for a terminal, and the exit code `cubicle doctor` ends with.
import type { DoctorCheck, DoctorStatus } from './diagnose.js';

const MARK: Record<DoctorStatus, string> = { ok: '✔', warn: '⚠', fail: '✘', skip: '–' };
const FIX_INDENT = '    ';

/** One line per check (`✔ title: detail`), the fix lines indented under it, and a summary line. */
export function formatDoctor(checks: readonly DoctorCheck[]): string {
  const lines: string[] = [];
  for (const c of checks) {
    lines.push(`${MARK[c.status]} ${c.title}: ${c.detail}`);
    if (c.fix && c.status !== 'ok') {
      const [first, ...rest] = c.fix.split('\n');
      lines.push(`${FIX_INDENT}fix: ${first}`);
      for (const l of rest) lines.push(`${FIX_INDENT}     ${l}`);
    }
  }
  const count = (s: DoctorStatus): number => checks.filter((c) => c.status === s).length;
  const [ok, warn, fail, skip] = [count('ok'), count('warn'), count('fail'), count('skip')];
  const tally = [`${ok} ok`, `${warn} warning${warn === 1 ? '' : 's'}`, `${fail} failed`, ...(skip ? [`${skip} skipped`] : [])].join(', ');
  const firstFail = checks.find((c) => c.status === 'fail');
  lines.push(
    firstFail
      ? `${tally}: cubicle cannot run here as is; start with "${firstFail.title}"`
      : `${tally}: cubicle can run sandboxes on this host`,
  );
  return lines.join('\n');
}

/** 0 when no check failed, 1 otherwise (warnings and skips do not fail). */
export function doctorExitCode(checks: readonly DoctorCheck[]): number {
  return checks.some((c) => c.status === 'fail') ? 1 : 0;
}
