import { type Fanout, type Latency, median, sum } from './measure.js'
import type { ClusterResult } from './cluster.js'
import type { ScenarioResult } from './scenario.js'

/**
 * Repeated rounds: each server runs at each C `rounds` times, the servers taking turns
 * (round r starts r places further along the list, so no server always follows the same
 * one), and the table shows each figure's median over the rounds. One run's latency or
 * small-C memory moves by 20–30% with whatever else the two cores were doing; a median
 * of interleaved rounds is what a single invocation can stand behind.
 */

/** The order the servers run in during round `round` (0-based). */
export function roundOrder<T> (servers: readonly T[], round: number): T[] {
  const shift = servers.length === 0 ? 0 : round % servers.length
  return [...servers.slice(shift), ...servers.slice(0, shift)]
}

type Round = ScenarioResult & { round: number }

/** One result per server and C: medians of the figures, the worst of the problems. */
export function combineRounds (runs: Round[]): ScenarioResult[] {
  const groups = new Map<string, Round[]>()
  for (const run of runs) {
    const key = `${run.server}\u0000${run.connections}`
    groups.set(key, [...(groups.get(key) ?? []), run])
  }
  return [...groups.values()].map(combine)
}

const present = <T>(xs: Array<T | undefined>): T[] => xs.filter((x): x is T => x !== undefined)
const medianOf = <T>(xs: T[], pick: (x: T) => number) => median(xs.map(pick))

function combine (runs: Round[]): ScenarioResult {
  const { server, connections } = runs[0]
  if (runs.length === 1) return stripRound(runs[0])
  const connectErrors: Record<string, number> = {}
  for (const r of runs) for (const [k, n] of Object.entries(r.connectErrors)) connectErrors[k] = (connectErrors[k] ?? 0) + n
  const memories = present(runs.map((r) => r.memory))
  const errors = present(runs.map((r) => r.error))
  const httpFailures = present(runs.map((r) => r.httpFailures))
  return {
    server,
    connections,
    connected: Math.min(...runs.map((r) => r.connected)),
    connectErrors,
    connectPerSec: medianOf(runs, (r) => r.connectPerSec),
    memory: memories.length === 0
      ? undefined
      : {
          rssPerConnection: medianOf(memories, (m) => m.rssPerConnection),
          heapPerConnection: medianOf(memories, (m) => m.heapPerConnection)
        },
    fanout: combineFanout(present(runs.map((r) => r.fanout))),
    fanoutHttp: combineFanout(present(runs.map((r) => r.fanoutHttp))),
    latency: combineLatency(present(runs.map((r) => r.latency))),
    latencyHttp: combineLatency(present(runs.map((r) => r.latencyHttp))),
    dropped: Math.max(...runs.map((r) => r.dropped)),
    httpFailures: httpFailures.length === 0 ? undefined : sum(httpFailures),
    error: errors.length === 0 ? undefined : errors.join('; ')
  }
}

function stripRound (run: Round): ScenarioResult {
  const { round: _round, ...result } = run
  return result
}

function combineFanout (runs: Fanout[]): Fanout | undefined {
  if (runs.length === 0) return undefined
  return {
    messagesPerSec: medianOf(runs, (f) => f.messagesPerSec),
    cpuUsPerMessage: medianOf(runs, (f) => f.cpuUsPerMessage),
    perClient: runs[0].perClient,
    delivered: sum(runs.map((f) => f.delivered)),
    expected: sum(runs.map((f) => f.expected)),
    complete: runs.every((f) => f.complete),
    reps: runs.flatMap((f) => f.reps)
  }
}

function combineLatency (runs: Latency[]): Latency | undefined {
  if (runs.length === 0) return undefined
  return {
    broadcastsPerSec: runs[0].broadcastsPerSec,
    broadcasts: sum(runs.map((l) => l.broadcasts)),
    p50: medianOf(runs, (l) => l.p50),
    p99: medianOf(runs, (l) => l.p99),
    samples: sum(runs.map((l) => l.samples)),
    expected: sum(runs.map((l) => l.expected)),
    negative: sum(runs.map((l) => l.negative))
  }
}

type ClusterRound = ClusterResult & { round: number }

/**
 * The multi-instance cases' rounds, as combineRounds does for one server: one result per
 * case (server, backend, peer) and C, each figure the median of its rounds; each Redis
 * server's CPU the median of its own.
 */
export function combineClusterRounds (runs: ClusterRound[]): ClusterResult[] {
  const groups = new Map<string, ClusterRound[]>()
  for (const run of runs) {
    const key = [run.server, run.backend, run.peer ?? 'gateway', run.connections].join('\u0000')
    groups.set(key, [...(groups.get(key) ?? []), run])
  }
  return [...groups.values()].map((group) => {
    const { round: _round, ...first } = group[0]
    if (group.length === 1) return first
    const nodes = [...new Set(group.flatMap((r) => Object.keys(r.redisCpu)))]
    const errors = present(group.map((r) => r.error))
    const httpFailures = present(group.map((r) => r.httpFailures))
    return {
      ...first,
      connected: Math.min(...group.map((r) => r.connected)),
      connectPerSec: medianOf(group, (r) => r.connectPerSec),
      fanout: combineFanout(present(group.map((r) => r.fanout))),
      fanoutHttp: combineFanout(present(group.map((r) => r.fanoutHttp))),
      latency: combineLatency(present(group.map((r) => r.latency))),
      latencyHttp: combineLatency(present(group.map((r) => r.latencyHttp))),
      redisCpu: Object.fromEntries(nodes.map((node) => [node, median(group.map((r) => r.redisCpu[node] ?? 0))])),
      dropped: Math.max(...group.map((r) => r.dropped)),
      httpFailures: httpFailures.length === 0 ? undefined : sum(httpFailures),
      error: errors.length === 0 ? undefined : errors.join('; ')
    }
  })
}
