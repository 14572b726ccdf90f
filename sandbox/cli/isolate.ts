export async function isolateMain(argv: string[]): Promise<number> {
  return argv.length;
}
