/** strace -c's table: syscall name → calls. */
export function parseStraceSummary (text: string): Map<string, number> {
  const calls = new Map<string, number>()
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/)
    // % time, seconds, usecs/call, calls, [errors,] syscall
    if (fields.length < 5 || !/^[0-9.]+$/.test(fields[0]) || fields.at(-1) === 'total') continue
    calls.set(fields.at(-1) as string, Number(fields[3]))
  }
  return calls
}
