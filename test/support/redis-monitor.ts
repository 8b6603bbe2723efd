import { once } from 'node:events'
import { connect } from 'node:net'
import type { Test } from 'tap'

/**
 * Redis's MONITOR on a plain socket, for tests that check what Redis was actually sent.
 *
 * Why not ioredis's `monitor()`: it marks the connection as monitoring in a promise callback
 * after MONITOR's `+OK`, so a command line that arrives in the same TCP read as the `+OK` is
 * taken for a reply to nothing ("Command queue state error") and the test dies. On a Redis
 * with traffic at that moment it happens (CI, December 2026).
 */
export interface RedisMonitor {
  /** Calls `listener` with each command Redis runs from now on: its arguments and its source ("ip:port", "lua", "unix:…"). */
  onCommand(listener: (args: string[], source: string) => void): void
}

export interface MonitoredCommand {
  args: string[]
  source: string
}

/** Opens a MONITOR on `url` (redis://host:port), closed when the test ends; resolves once Redis has acknowledged it. */
export async function monitorRedis (t: Test, url: string): Promise<RedisMonitor> {
  const { hostname, port, password, username } = new URL(url)
  const socket = connect(Number(port || 6379), hostname || '127.0.0.1')
  socket.setNoDelay(true)
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  if (password !== '') socket.write(command(username !== '' ? ['AUTH', decodeURIComponent(username), decodeURIComponent(password)] : ['AUTH', decodeURIComponent(password)]))
  socket.write(command(['MONITOR']))
  return await new Promise<RedisMonitor>((resolve, reject) => {
    const listeners: Array<(args: string[], source: string) => void> = []
    let acknowledged = false
    let buffered = ''
    const monitor: RedisMonitor = { onCommand: (listener) => { listeners.push(listener) } }
    socket.setEncoding('latin1') // MONITOR escapes every byte outside printable ASCII
    socket.on('error', (error) => { if (!acknowledged) reject(error) })
    socket.on('close', () => { if (!acknowledged) reject(new Error(`MONITOR on ${hostname}:${port} closed before it was acknowledged`)) })
    socket.on('data', (chunk: string) => {
      buffered += chunk
      let end: number
      while ((end = buffered.indexOf('\r\n')) !== -1) {
        const line = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        if (line.startsWith('-')) {
          if (!acknowledged) reject(new Error(`MONITOR refused: ${line.slice(1)}`))
          socket.destroy()
          return
        }
        if (!acknowledged) {
          if (line === '+OK') { acknowledged = true; resolve(monitor) }
          continue
        }
        const parsed = parseMonitorLine(line)
        if (parsed !== null) for (const listener of listeners) listener(parsed.args, parsed.source)
      }
    })
  })
}

function command (args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`
}

/** `+1796112526.185206 [0 127.0.0.1:41586] "set" "k" "v\"1"` → its arguments and source; null for anything else. */
export function parseMonitorLine (line: string): MonitoredCommand | null {
  const header = /^\+\d+\.\d+ \[\d+ ([^\]]+)\] /.exec(line)
  if (header === null) return null
  const args: string[] = []
  let i = header[0].length
  while (i < line.length) {
    if (line[i] === ' ') { i++; continue }
    if (line[i] !== '"') return null
    const bytes: number[] = []
    i++
    for (;;) {
      if (i >= line.length) return null
      const c = line[i]
      if (c === '"') { i++; break }
      if (c !== '\\') { bytes.push(line.charCodeAt(i)); i++; continue }
      const e = line[i + 1]
      if (e === 'x') {
        bytes.push(parseInt(line.slice(i + 2, i + 4), 16))
        i += 4
        continue
      }
      bytes.push((ESCAPES[e] ?? e).charCodeAt(0))
      i += 2
    }
    args.push(Buffer.from(bytes).toString('utf8'))
  }
  return { args, source: header[1] }
}

// What Redis's sdscatrepr writes for these bytes; any other escaped character stands for itself.
const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' }
