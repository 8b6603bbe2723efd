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
  for (const cluster of clusters.filter((r) => r.backend === 'redis')) {
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

export const SHARDED_HEADER = ['C', 'metric', 'one Redis', 'Redis Cluster', 'cluster/one', 'notes']

/** Redis CPU of a run: the total, and each server's share of it. */
function cpuShares (run: ClusterResult): string {
  const entries = Object.entries(run.redisCpu)
  const total = entries.reduce((sum, [, s]) => sum + s, 0)
  if (total <= 0) return ''
  return entries.map(([node, s]) => `${node} ${(100 * s / total).toFixed(0)} %`).join(', ')
}

/**
 * The sharded table (issue 16): the same 3 gateways, clients and load on one Redis and on a
 * 3-master Redis Cluster: delivered msgs/s, latency, and Redis CPU in all and per shard.
 */
export function buildShardedTable (clusters: ClusterResult[]): string[][] {
  const rows: string[][] = []
  for (const sharded of clusters.filter((r) => r.backend === 'redis-cluster')) {
    const c = sharded.connections
    const one = clusters.find((r) => r.backend === 'redis' && r.connections === c)
    const cell = (row: Row, r: Side | undefined) => { const v = r === undefined ? undefined : row.value(r); return v === undefined || !Number.isFinite(v) ? '–' : row.format(v) }
    for (const row of ROWS) {
      const a = one === undefined ? undefined : row.value(one)
      const b = row.value(sharded)
      const ratio = a === undefined || b === undefined || a === 0 ? undefined : b / a
      rows.push([String(c), row.name, cell(row, one), cell(row, sharded), ratio === undefined || !Number.isFinite(ratio) ? '–' : `${ratio.toFixed(2)}×`, ''])
    }
    const cpu = (r: ClusterResult | undefined) => r === undefined ? undefined : Object.values(r.redisCpu).reduce((a, b) => a + b, 0)
    const [a, b] = [cpu(one), cpu(sharded)]
    rows.push([String(c), 'Redis CPU during fan-out, s (all servers)', a === undefined ? '–' : a.toFixed(2), b === undefined ? '–' : b.toFixed(2),
      a === undefined || b === undefined || a === 0 ? '–' : `${(b / a).toFixed(2)}×`, `per shard: ${cpuShares(sharded)}`])
    const problems = [one === undefined ? 'no one-Redis run at this C' : problemsOf(one), problemsOf(sharded)].filter((p) => p !== '')
    if (problems.length > 0) rows.push([String(c), 'problems', '', '', '', problems.join('; ')])
  }
  return rows
}
