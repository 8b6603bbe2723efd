import type { ClusterBackend, ClusterPeer, ClusterResult } from './cluster.js'
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

/** Results written before issue 18 have no `peer`: they are the gateway's. */
const isGateway = (r: ClusterResult) => (r.peer ?? 'gateway') === 'gateway'

export const CLUSTER_HEADER = ['C', 'metric', 'single', 'cluster', 'cluster/single', 'notes']

export function buildClusterTable (singles: ScenarioResult[], clusters: ClusterResult[]): string[][] {
  const rows: string[][] = []
  for (const cluster of clusters.filter((r) => r.backend === 'redis' && isGateway(r))) {
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
    const one = clusters.find((r) => r.backend === 'redis' && isGateway(r) && r.connections === c)
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

/**
 * Each round's cluster ÷ one Redis ratio of delivered msgs/s (broker API, then HTTP), so a
 * median can be read with its spread: "round ratios, broker API 0.98×, 1.04×; HTTP …".
 */
export function shardedRoundRatios (runs: Array<ClusterResult & { round: number }>): string {
  const gateway = runs.filter(isGateway)
  const parts: string[] = []
  for (const c of [...new Set(gateway.map((r) => r.connections))].sort((a, b) => a - b)) {
    const pairs = [...new Set(gateway.map((r) => r.round))].sort((a, b) => a - b).flatMap((round) => {
      const at = (backend: ClusterBackend) => gateway.find((r) => r.connections === c && r.round === round && r.backend === backend)
      const [one, sharded] = [at('redis'), at('redis-cluster')]
      return one === undefined || sharded === undefined ? [] : [{ one, sharded }]
    })
    if (pairs.length === 0) continue
    const ratios = (pick: (r: ClusterResult) => number | undefined) => pairs.map(({ one, sharded }) => {
      const [a, b] = [pick(one), pick(sharded)]
      return a === undefined || b === undefined || a === 0 ? '–' : `${(b / a).toFixed(2)}×`
    }).join(', ')
    parts.push(`C=${c}, each round's cluster/one msgs/s: broker API ${ratios((r) => r.fanout?.messagesPerSec)}; HTTP ${ratios((r) => r.fanoutHttp?.messagesPerSec)}.`)
  }
  return parts.join(' ')
}

const PEER_NAMES: Record<Exclude<ClusterPeer, 'gateway'>, string> = { 'socketio-redis': 'sio+redis', 'socketio-streams': 'sio+streams' }

/** A target of issue 18's cross-instance case, checked on one run: gateway ÷ Socket.IO on the Redis adapter. */
export interface PeerCheck { connections: number, metric: string, ratio: number, limit: number, met: boolean }

/** The targets: ≥ 3× msgs/s and p99 ≤ 0.8× Socket.IO on `@socket.io/redis-adapter`, fed each way. */
const PEER_TARGETS: Array<{ metric: string, kind: 'min' | 'max', limit: number }> = [
  { metric: 'fan-out, delivered msgs/s (broker API)', kind: 'min', limit: 3 },
  { metric: 'fan-out, delivered msgs/s (HTTP)', kind: 'min', limit: 3 },
  { metric: 'latency p99, ms (broker API)', kind: 'max', limit: 0.8 },
  { metric: 'latency p99, ms (HTTP)', kind: 'max', limit: 0.8 }
]

/**
 * Issue 18's cross-instance table: per C, 3 gateways on one Redis against 3 Socket.IO servers
 * on the Redis adapter (and on the streams adapter when it ran), same clients and load, with
 * gateway ÷ Socket.IO ratios. CPU per delivered message is summed over the 3 instances.
 */
export function buildPeerTable (clusters: ClusterResult[]): { header: string[], rows: string[][], checks: PeerCheck[] } {
  const peers = (Object.keys(PEER_NAMES) as Array<keyof typeof PEER_NAMES>).filter((p) => clusters.some((r) => r.peer === p))
  const header = ['C', 'metric', 'gateway ×3', ...peers.map((p) => `${PEER_NAMES[p]} ×3`), ...peers.map((p) => `gw/${PEER_NAMES[p]}`), 'targets']
  const rows: string[][] = []
  const checks: PeerCheck[] = []
  if (peers.length === 0) return { header, rows, checks }
  const counts = [...new Set(clusters.filter((r) => r.peer !== undefined && r.peer !== 'gateway').map((r) => r.connections))].sort((a, b) => a - b)
  for (const c of counts) {
    const gw = clusters.find((r) => r.backend === 'redis' && isGateway(r) && r.connections === c)
    const others = peers.map((p) => clusters.find((r) => r.peer === p && r.connections === c))
    const value = (row: Row, r: Side | undefined) => { const v = r === undefined ? undefined : row.value(r); return v === undefined || !Number.isFinite(v) ? undefined : v }
    for (const row of ROWS) {
      const a = value(row, gw)
      const bs = others.map((o) => value(row, o))
      const ratios = bs.map((b) => a === undefined || b === undefined || b === 0 ? undefined : a / b)
      const target = PEER_TARGETS.find((t) => t.metric === row.name)
      let note = ''
      const vsRedis = ratios[peers.indexOf('socketio-redis')]
      if (target !== undefined && vsRedis !== undefined && peers.includes('socketio-redis')) {
        const met = target.kind === 'min' ? vsRedis >= target.limit : vsRedis <= target.limit
        checks.push({ connections: c, metric: row.name, ratio: vsRedis, limit: target.limit, met })
        note = `${met ? 'ok' : 'TARGET MISSED'} ${target.kind === 'min' ? '≥' : '≤'}${target.limit}×sio+redis`
      }
      rows.push([String(c), row.name, a === undefined ? '–' : row.format(a), ...bs.map((b) => b === undefined ? '–' : row.format(b)),
        ...ratios.map((r) => r === undefined ? '–' : `${r.toFixed(2)}×`), note])
    }
    const blanks = (n: number) => Array.from({ length: n }, () => '')
    rows.push([String(c), 'clients per instance', gw?.perInstance.join(' / ') ?? '–', ...others.map((o) => o?.perInstance.join(' / ') ?? '–'), ...blanks(peers.length), ''])
    const problems = [gw === undefined ? 'no gateway cluster run at this C' : problemsOf(gw), ...others.map((o, i) => o === undefined ? `no ${peers[i]} run` : problemsOf(o))]
      .filter((p) => p !== '')
    if (problems.length > 0) rows.push([String(c), 'problems', ...blanks(1 + 2 * peers.length), problems.join('; ')])
  }
  return { header, rows, checks }
}
