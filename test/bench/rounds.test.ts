import t from 'tap'
import { buildTable } from '../../bench/report.js'
import type { ClusterBackend, ClusterResult } from '../../bench/cluster.js'
import { shardedRoundRatios } from '../../bench/cluster-report.js'
import { combineClusterRounds, combineRounds, roundOrder } from '../../bench/rounds.js'
import type { ScenarioResult, ServerName } from '../../bench/scenario.js'

// The benchmark's verdict on issue 6 rests on these medians: pin how rounds combine.

function run (server: ServerName, round: number, p99: number, heap: number, extra: Partial<ScenarioResult> = {}): ScenarioResult & { round: number } {
  return {
    server,
    connections: 1000,
    connected: 1000,
    connectErrors: {},
    connectPerSec: 1000 + round,
    memory: { rssPerConnection: heap * 2, heapPerConnection: heap },
    fanout: { messagesPerSec: 100 * (round + 1), cpuUsPerMessage: 1, perClient: 5, delivered: 5000, expected: 5000, complete: true, reps: [round] },
    latency: { broadcastsPerSec: 20, broadcasts: 10, p50: p99 / 2, p99, samples: 10_000, expected: 10_000, negative: 0 },
    dropped: 0,
    round,
    ...extra
  }
}

t.test('rounds take turns: round r starts r places further along the list', async (t) => {
  const servers = ['gateway', 'ws-naive', 'ws-corked', 'socketio']
  t.same(roundOrder(servers, 0), servers)
  t.same(roundOrder(servers, 1), ['ws-naive', 'ws-corked', 'socketio', 'gateway'])
  t.same(roundOrder(servers, 5), roundOrder(servers, 1), 'wraps around')
  t.same(roundOrder([], 3), [])
})

t.test('one result per server and C, each figure the median of its rounds', async (t) => {
  const combined = combineRounds([
    run('gateway', 0, 30, 3000), run('ws-naive', 0, 10, 2500),
    run('gateway', 1, 10, 2900), run('ws-naive', 1, 12, 2400),
    run('gateway', 2, 12, 2800), run('ws-naive', 2, 11, 2600)
  ])
  t.equal(combined.length, 2)
  const gw = combined.find((r) => r.server === 'gateway')
  t.equal(gw?.latency?.p99, 12, 'the slow round (30 ms) does not decide the p99')
  t.equal(gw?.memory?.heapPerConnection, 2900)
  t.equal(gw?.fanout?.messagesPerSec, 200)
  t.equal(gw?.latency?.samples, 30_000, 'completeness counts are summed over the rounds')
  t.same(gw?.fanout?.reps, [0, 1, 2], 'every burst is kept')
  t.notOk('round' in (gw ?? {}), 'the combined result is no single round')

  const p99 = buildTable(combined).checks.find((c) => c.metric === 'latency p99, ms')
  t.equal(p99?.ratio, 12 / 11, 'ratios are of the medians')
  t.equal(p99?.met, true)
})

t.test('a problem in any round stays visible in the combined result', async (t) => {
  const [gw] = combineRounds([
    run('gateway', 0, 10, 3000),
    run('gateway', 1, 10, 3000, { connected: 990, connectErrors: { 'closed 1013 before ready': 10 }, dropped: 3 }),
    run('gateway', 2, 10, 3000, { error: 'server did not start', latency: undefined })
  ])
  t.equal(gw.connected, 990, 'the fewest connected')
  t.equal(gw.dropped, 3, 'the most dropped')
  t.same(gw.connectErrors, { 'closed 1013 before ready': 10 })
  t.equal(gw.error, 'server did not start')
  t.equal(gw.latency?.p99, 10, 'medians over the rounds that measured it')
})

t.test('a single round passes through unchanged', async (t) => {
  const only = run('socketio', 0, 20, 9000)
  const [result] = combineRounds([only])
  const { round: _round, ...expected } = only
  t.same(result, expected)
})

function clusterRun (backend: ClusterBackend, round: number, msgs: number, cpu: Record<string, number>, extra: Partial<ClusterResult> = {}): ClusterResult & { round: number } {
  const { server: _server, memory: _memory, round: _round, ...base } = run('gateway', round, 20, 1000)
  return {
    ...base,
    server: 'gateway-cluster',
    peer: 'gateway',
    instances: 3,
    backend,
    redisCpu: cpu,
    perInstance: [1000, 1000, 1000],
    keyPrefix: `p${round}:`,
    fanout: { messagesPerSec: msgs, cpuUsPerMessage: 1, perClient: 5, delivered: 5000, expected: 5000, complete: true, reps: [round] },
    fanoutHttp: { messagesPerSec: msgs / 2, cpuUsPerMessage: 5, perClient: 5, delivered: 5000, expected: 5000, complete: true, reps: [round] },
    round,
    ...extra
  }
}

t.test('the multi-instance cases: one result per backend and C, medians of the rounds, every round\'s ratio shown', async (t) => {
  const runs = [
    clusterRun('redis', 0, 600, { 'r:1': 0.1 }), clusterRun('redis-cluster', 0, 300, { 'c:1': 0.3, 'c:2': 0.1 }),
    clusterRun('redis-cluster', 1, 660, { 'c:1': 0.2, 'c:2': 0.2 }), clusterRun('redis', 1, 500, { 'r:1': 0.3 }),
    clusterRun('redis', 2, 700, { 'r:1': 0.2 }), clusterRun('redis-cluster', 2, 700, { 'c:1': 0.1 }, { dropped: 2 })
  ]
  const combined = combineClusterRounds(runs)
  t.equal(combined.length, 2)
  const one = combined.find((r) => r.backend === 'redis')
  const sharded = combined.find((r) => r.backend === 'redis-cluster')
  t.equal(one?.fanout?.messagesPerSec, 600)
  t.equal(sharded?.fanout?.messagesPerSec, 660, 'the slow round (300) does not decide')
  t.equal(sharded?.fanoutHttp?.messagesPerSec, 330)
  t.same(sharded?.redisCpu, { 'c:1': 0.2, 'c:2': 0.1 }, 'each server\'s median, a round that did not report it counting 0')
  t.equal(sharded?.dropped, 2, 'a problem in any round stays visible')
  t.notOk('round' in (sharded ?? {}))
  t.equal(shardedRoundRatios(runs), 'C=1000, each round\'s cluster/one msgs/s: broker API 0.50×, 1.32×, 1.00×; HTTP 0.50×, 1.32×, 1.00×.')
  t.same(combineClusterRounds([runs[0]]), [{ ...runs[0], round: undefined }].map(({ round: _r, ...r }) => r), 'one round: that round, as it was')
})
