import type { ScenarioResult, ServerName } from './scenario.js'

/**
 * The one table: per connection count and metric, the absolute figure of each server and
 * the gateway's ratios. Ratios are gateway ÷ peer, so read them with the metric's
 * direction: for msgs/s and conn/s above 1 is better; for memory, CPU and latency
 * below 1 is better. Targets are checked on the same run and machine.
 */
type Direction = 'higher' | 'lower'

interface Metric {
  name: string
  direction: Direction
  /** The gateway's figure for this row (HTTP rows read the gateway's HTTP-path numbers). */
  gateway: (r: ScenarioResult) => number | undefined
  peer: (r: ScenarioResult) => number | undefined
  format: (v: number) => string
  /** The issue's targets for this row: ratio limits against named peers. */
  targets?: Array<{ peer: ServerName, limit: number }>
}

const KiB = 1024
const per10kMB = (bytes: number) => (bytes * 10_000) / (1024 * 1024)
const fixed = (digits: number) => (v: number) => v.toFixed(digits)
export const rate = (v: number) => v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0)

const METRICS: Metric[] = [
  { name: 'connect rate, conn/s', direction: 'higher', gateway: (r) => r.connectPerSec || undefined, peer: (r) => r.connectPerSec || undefined, format: rate },
  {
    name: 'heap per 10k idle conns, MB',
    direction: 'lower',
    format: fixed(1),
    gateway: (r) => r.memory && per10kMB(r.memory.heapPerConnection),
    peer: (r) => r.memory && per10kMB(r.memory.heapPerConnection),
    targets: [{ peer: 'ws-naive', limit: 1.3 }, { peer: 'socketio', limit: 0.5 }]
  },
  {
    name: 'RSS per 10k idle conns, MB',
    direction: 'lower',
    format: fixed(1),
    gateway: (r) => r.memory && per10kMB(r.memory.rssPerConnection),
    peer: (r) => r.memory && per10kMB(r.memory.rssPerConnection),
    targets: [{ peer: 'ws-naive', limit: 1.3 }, { peer: 'socketio', limit: 0.5 }]
  },
  {
    name: '1M conns on paper (RSS), GiB',
    direction: 'lower',
    format: fixed(2),
    gateway: (r) => r.memory && (r.memory.rssPerConnection * 1e6) / KiB ** 3,
    peer: (r) => r.memory && (r.memory.rssPerConnection * 1e6) / KiB ** 3
  },
  {
    name: 'fan-out, delivered msgs/s',
    direction: 'higher',
    format: rate,
    gateway: (r) => r.fanout?.messagesPerSec,
    peer: (r) => r.fanout?.messagesPerSec,
    targets: [{ peer: 'ws-corked', limit: 0.8 }, { peer: 'socketio', limit: 3 }]
  },
  { name: '  gateway fed by HTTP publish', direction: 'higher', format: rate, gateway: (r) => r.fanoutHttp?.messagesPerSec, peer: (r) => r.fanout?.messagesPerSec },
  { name: 'server CPU per delivered msg, µs', direction: 'lower', format: fixed(2), gateway: (r) => r.fanout?.cpuUsPerMessage, peer: (r) => r.fanout?.cpuUsPerMessage },
  { name: '  gateway fed by HTTP publish', direction: 'lower', format: fixed(2), gateway: (r) => r.fanoutHttp?.cpuUsPerMessage, peer: (r) => r.fanout?.cpuUsPerMessage },
  { name: 'latency p50, ms', direction: 'lower', format: fixed(2), gateway: (r) => r.latency?.p50, peer: (r) => r.latency?.p50 },
  {
    name: 'latency p99, ms',
    direction: 'lower',
    format: fixed(2),
    gateway: (r) => r.latency?.p99,
    peer: (r) => r.latency?.p99,
    targets: [{ peer: 'ws-naive', limit: 1.2 }]
  },
  { name: '  p50 gateway fed by HTTP', direction: 'lower', format: fixed(2), gateway: (r) => r.latencyHttp?.p50, peer: (r) => r.latency?.p50 },
  { name: '  p99 gateway fed by HTTP', direction: 'lower', format: fixed(2), gateway: (r) => r.latencyHttp?.p99, peer: (r) => r.latency?.p99 }
]

const RATIO_PEERS: ServerName[] = ['ws-naive', 'ws-corked', 'socketio']
const HEADER = ['C', 'metric', 'gateway', 'ws naive', 'ws corked', 'socket.io', 'gw/naive', 'gw/corked', 'gw/sio', 'targets']

export interface TargetCheck { connections: number, metric: string, peer: ServerName, limit: number, ratio: number, met: boolean }

export function buildTable (results: ScenarioResult[]): { rows: string[][], checks: TargetCheck[] } {
  const rows: string[][] = []
  const checks: TargetCheck[] = []
  const counts = [...new Set(results.map((r) => r.connections))]
  for (const c of counts) {
    const of = (server: ServerName) => results.find((r) => r.connections === c && r.server === server)
    const gw = of('gateway')
    for (const metric of METRICS) {
      const gwValue = gw === undefined ? undefined : metric.gateway(gw)
      const cell = (v: number | undefined) => v === undefined || !Number.isFinite(v) ? '–' : metric.format(v)
      const peers = RATIO_PEERS.map((p) => { const r = of(p); return r === undefined ? undefined : metric.peer(r) })
      const ratios = peers.map((p) => gwValue === undefined || p === undefined || p === 0 ? undefined : gwValue / p)
      const marks: string[] = []
      for (const target of metric.targets ?? []) {
        const ratio = ratios[RATIO_PEERS.indexOf(target.peer)]
        if (ratio === undefined || !Number.isFinite(ratio)) continue
        const met = metric.direction === 'higher' ? ratio >= target.limit : ratio <= target.limit
        checks.push({ connections: c, metric: metric.name, peer: target.peer, limit: target.limit, ratio, met })
        marks.push(`${met ? 'ok' : 'TARGET MISSED'} ${metric.direction === 'higher' ? '≥' : '≤'}${target.limit}×${short(target.peer)}`)
      }
      rows.push([String(c), metric.name, cell(gwValue), ...peers.map(cell),
        ...ratios.map((r) => r === undefined || !Number.isFinite(r) ? '–' : `${r.toFixed(2)}×`), marks.join(', ')])
    }
    const problems = results.filter((r) => r.connections === c)
      .map((r) => problemsOf(r)).filter((p) => p !== '')
    if (problems.length > 0) rows.push([String(c), 'problems', problems.join('; '), '', '', '', '', '', '', ''])
  }
  return { rows, checks }
}

const short = (peer: ServerName) => peer === 'ws-naive' ? 'naive' : peer === 'ws-corked' ? 'corked' : 'sio'

/** What makes a row's figures suspect: failed connects, drops, lost deliveries, errors. */
export function problemsOf (r: Omit<ScenarioResult, 'server'> & { server: string }): string {
  const out: string[] = []
  if (r.error !== undefined) out.push(`error: ${r.error}`)
  const failed = r.connections - r.connected
  if (failed > 0) out.push(`${failed} connects failed (${Object.entries(r.connectErrors).map(([k, n]) => `${n}× ${k}`).join(', ')})`)
  if (r.dropped > 0) out.push(`${r.dropped} clients dropped`)
  if (r.fanout !== undefined && !r.fanout.complete) out.push(`fan-out lost ${r.fanout.expected - r.fanout.delivered} of ${r.fanout.expected}`)
  if (r.fanoutHttp !== undefined && !r.fanoutHttp.complete) out.push(`HTTP fan-out lost ${r.fanoutHttp.expected - r.fanoutHttp.delivered} of ${r.fanoutHttp.expected}`)
  for (const l of [r.latency, r.latencyHttp]) if (l !== undefined && l.samples !== l.expected) out.push(`latency run got ${l.samples} of ${l.expected}`)
  if ((r.httpFailures ?? 0) > 0) out.push(`${r.httpFailures} HTTP publishes failed`)
  return out.length === 0 ? '' : `${r.server}: ${out.join(', ')}`
}

/** Columns 0, 1 and the last are text (left-aligned), the others figures (right-aligned). */
export function formatTable (rows: string[][], header: string[] = HEADER): string {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((r) => [...(r[i] ?? '')].length)))
  const line = (r: string[]) => r.map((cell, i) => i <= 1 || i === r.length - 1 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join('  ').trimEnd()
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}
