// The part of pidusage (which ships no types) that cubicle uses.
declare module 'pidusage' {
  interface Stat {
    cpu: number;
    memory: number;
    ppid: number;
    pid: number;
    ctime: number;
    elapsed: number;
    timestamp: number;
  }
  function pidusage(pid: number): Promise<Stat>;
  namespace pidusage {
    function clear(): void;
  }
  export default pidusage;
}
