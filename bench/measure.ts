import { now, sleep } from './lib/clock.js'
import { Histogram, type SparseHistogram } from './lib/histogram.js'
import type { ChildChannel } from './lib/ipc.js'

/**
 * The two measurements every scenario shares: bursts (delivered msgs/s, server CPU per
 * delivery) and a steady rate (publish→receive latency histogram). The server side is a
 * list of processes, so a cluster's CPU is the sum of its instances'.
 */
export interface Fanout { messagesPerSec: number, cpuUsPerMessage: number, perClient: number, delivered: number, expected: number, complete: boolean, reps: number[] }
export interface Latency { broadcastsPerSec: number, broadcasts: number, p50: number, p99: number, samples: number, expected: number, negative: number }

export const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }
export const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)

async function cpuOf (servers: ChildChannel[]): Promise<number> {
  const times = await Promise.all(servers.map((s) => s.request<{ user: number, system: number }>({ op: 'cpu' }, 10_000)))
  return sum(times.map((t) => t.user + t.system))
}

export async function burstReps (servers: ChildChannel[], loads: ChildChannel[], perClient: number, reps: number, trigger: () => Promise<void>): Promise<Fanout> {
  const runs: Fanout[] = []
  for (let i = 0; i < reps; i++) {
    runs.push(await measureBurst(servers, loads, perClient, trigger))
    await sleep(200)
  }
  const rates = runs.map((r) => r.messagesPerSec)
  return {
    messagesPerSec: median(rates),
    cpuUsPerMessage: median(runs.map((r) => r.cpuUsPerMessage)),
    perClient,
    delivered: sum(runs.map((r) => r.delivered)),
    expected: sum(runs.map((r) => r.expected)),
    complete: runs.every((r) => r.complete),
    reps: rates
  }
}

/** One burst of `perClient` broadcasts: delivered msgs/s from trigger to last delivery, server CPU per delivery. */
export async function measureBurst (servers: ChildChannel[], loads: ChildChannel[], perClient: number, trigger: () => Promise<void>): Promise<Fanout> {
  const armed = await Promise.all(loads.map((l) => l.request<{ expected: number }>({ op: 'arm', perClient, timing: false }, 10_000)))
  const expected = sum(armed.map((a) => a.expected))
  const timeoutMs = 20_000 + expected / 20
  const cpuBefore = await cpuOf(servers)
  const started = now()
  const waits = loads.map((l) => l.request<{ received: number, doneAt: number, complete: boolean }>({ op: 'wait', timeoutMs }, timeoutMs + 10_000))
  await trigger()
  const done = await Promise.all(waits)
  const cpuAfter = await cpuOf(servers)
  const delivered = sum(done.map((d) => d.received))
  const complete = done.every((d) => d.complete)
  const end = complete ? Math.max(...done.map((d) => d.doneAt)) : now()
  return {
    messagesPerSec: delivered / ((end - started) / 1000),
    cpuUsPerMessage: (cpuAfter - cpuBefore) / Math.max(1, delivered),
    perClient,
    delivered,
    expected,
    complete,
    reps: []
  }
}

/** A steady broadcast rate for a while; every delivery's publish→receive time goes in one histogram. */
export async function measureLatency (
  loads: ChildChannel[], settings: { latencyDeliveriesPerSec: number, latencyMs: number }, connected: number,
  drive: (rate: number, ticks: number) => Promise<void>
): Promise<Latency> {
  const rate = settings.latencyDeliveriesPerSec / connected
  const ticks = Math.max(8, Math.round((settings.latencyMs / 1000) * rate))
  const durationMs = (ticks * 1000) / rate
  const armed = await Promise.all(loads.map((l) => l.request<{ expected: number }>({ op: 'arm', perClient: ticks, timing: true }, 10_000)))
  const waits = loads.map((l) => l.request({ op: 'wait', timeoutMs: durationMs + 10_000 }, durationMs + 20_000))
  await drive(rate, ticks)
  await Promise.all(waits)
  const histogram = new Histogram()
  let negative = 0
  for (const l of loads) {
    const h = await l.request<{ bins: SparseHistogram, negative: number }>({ op: 'histogram' }, 10_000)
    histogram.add(h.bins)
    negative += h.negative
  }
  return {
    broadcastsPerSec: rate,
    broadcasts: ticks,
    p50: histogram.percentile(0.5),
    p99: histogram.percentile(0.99),
    samples: histogram.count,
    expected: sum(armed.map((a) => a.expected)),
    negative
  }
}
