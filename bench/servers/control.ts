import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8'
import { now, sleep } from '../lib/clock.js'
import { type Handlers, notify, serve } from '../lib/ipc.js'

/** The channel every bench client listens on, on every server. */
export const BENCH_CHANNEL = 'room:bench'

/** What each server broadcasts: the same fields on every server, so frames are the same size. */
export interface BenchMessage {
  seq: number
  /** now() when the server built the message: the receiver's latency reference. */
  sentAt: number
}

/** The gateway's frame shape (docs/protocol.md, WebSocket), which the bare servers imitate byte for byte. */
export function frameOf (m: BenchMessage): { type: string, channel: string, offset: number, payload: BenchMessage, ts: string } {
  return { type: 'bench', channel: BENCH_CHANNEL, offset: m.seq, payload: m, ts: new Date(Math.floor(m.sentAt)).toISOString() }
}

export interface BenchServer {
  /** Sends every message, in order, to every connected client. */
  broadcast(messages: BenchMessage[]): void
  connections(): number
  handlers?: Handlers
}

const gc = (globalThis as { gc?: () => void }).gc

async function collect (): Promise<void> {
  if (gc === undefined) throw new Error('run the server with --expose-gc')
  // Twice, a tick apart: the first pass may leave finalizers that free more on the second.
  gc()
  await sleep(50)
  gc()
}

/**
 * The control protocol every bench server speaks over IPC: memory after GC, CPU time,
 * a burst of broadcasts, a steady broadcast rate, heap snapshots. Bounded: a burst is a
 * counted loop and a steady run ends by its duration.
 */
export function serveControl (server: BenchServer, port: number): void {
  let seq = 0
  const next = (): BenchMessage => ({ seq: ++seq, sentAt: now() })
  serve({
    mem: async () => {
      await collect()
      const m = process.memoryUsage()
      const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_used_size]))
      return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, spaces }
    },
    cpu: () => ({ ...process.cpuUsage() }),
    connections: () => ({ connections: server.connections() }),
    burst: (request) => {
      const count = Number(request.count)
      const messages: BenchMessage[] = []
      for (let i = 0; i < count; i++) messages.push(next())
      server.broadcast(messages)
      return { sent: count }
    },
    steady: async (request) => {
      const periodMs = 1000 / Number(request.rate)
      const ticks = Math.max(1, Math.round(Number(request.durationMs) / periodMs))
      let sent = 0
      await new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          server.broadcast([next()])
          if (++sent >= ticks) {
            clearInterval(timer)
            resolve()
          }
        }, periodMs)
      })
      return { sent }
    },
    snapshot: (request) => {
      const dir = String(request.dir)
      mkdirSync(dir, { recursive: true })
      return { file: writeHeapSnapshot(join(dir, `${String(request.name)}.heapsnapshot`)) }
    },
    ...server.handlers
  })
  notify({ op: 'ready', port })
}
