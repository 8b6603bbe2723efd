import type { ClusterResult } from './cluster.js'
import { problemsOf, rate } from './report.js'
import type { ScenarioResult } from './scenario.js'

/**
 * The cross-instance table: per C, the single memory-broker gateway and the cluster on
 * Redis under the same load, and cluster ÷ single. For msgs/s above 1 means the cluster
 * does better; for CPU and latency below 1 does. CPU is summed over the instances.
 */
type Side = Omit<ScenarioResult, 'server' | 'memory'>
interface Row { name: string, value: (r: Side) => number | undefined, format: (v: number) => string }

const ms = (v: number) => v.toFixed(2)
const ROWS: Row[] = [
  { name: 'fan-out, delivered msgs/s (broker API)', value: (r) => r.fanout?.messagesPerSec, format: rate },
  { name: 'fan-out, delivered msgs/s (HTTP)', value: (r) => r.fanoutHttp?.messagesPerSec, format: rate },
  { name: 'server CPU per delivered msg, µs (broker API)', value: (r) => r.fanout?.cpuUsPerMessage, format: ms },
  { name: 'server CPU per delivered msg, µs (HTTP)', value: (r) => r.fanoutHttp?.cpuUsPerMessage, format: ms },
  { name: 'latency p50, ms (broker API)', value: (r) => r.latency?.p50, format: ms },
  { name: 'latency p99, ms (broker API)', value: (r) => r.latency?.p99, format: ms },
  { name: 'latency p50, ms (HTTP)', value: (r) => r.latencyHttp?.p50, format: ms },
  { name: 'latency p99, ms (HTTP)', value: (r) => r.latencyHttp?.p99, format: ms }
]

export const CLUSTER_HEADER = ['C', 'metric', 'single', 'cluster', 'cluster/single', 'notes']

export function buildClusterTable (singles: ScenarioResult[], clusters: ClusterResult[]): string[][] {
  const rows: string[][] = []
  for (const cluster of clusters) {
    const c = cluster.connections
    const single = singles.find((r) => r.server === 'gateway' && r.connections === c)
    const cell = (row: Row, r: Side | undefined) => { const v = r === undefined ? undefined : row.value(r); return v === undefined || !Number.isFinite(v) ? '–' : row.format(v) }
    for (const row of ROWS) {
      const a = single === undefined ? undefined : row.value(single)
      const b = row.value(cluster)
      const ratio = a === undefined || b === undefined || a === 0 ? undefined : b / a
      rows.push([String(c), row.name, cell(row, single), cell(row, cluster), ratio === undefined || !Number.isFinite(ratio) ? '–' : `${ratio.toFixed(2)}×`, ''])
    }
    rows.push([String(c), 'clients per instance', '', cluster.perInstance.join(' / '), '', `${cluster.instances} instances, one Redis, published through instance 0`])
    const problems = [single === undefined ? 'no single-gateway run at this C' : problemsOf(single), problemsOf(cluster)].filter((p) => p !== '')
    if (problems.length > 0) rows.push([String(c), 'problems', '', '', '', problems.join('; ')])
  }
  return rows
}
