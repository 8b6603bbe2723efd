import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { Redis } from 'ioredis'
import type { PublishedEvent, StreamPosition } from '../../lib/core/event.js'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import { RedisLayout } from '../../lib/broker/redis-layout.js'
import { slotOf } from '../../lib/broker/redis-slots.js'
import { suiteChannel } from '../support/broker-suite.js'
import { requireService, sleep } from '../support/helper.js'
import { clusterSeeds, eventually, redisClusterAvailable, uniquePrefix } from '../support/redis-fixture.js'
import { holdServiceLock } from '../support/service-lock.js'

// A master of the real 6-node cluster killed with SIGKILL under live traffic (issue 16,
// docs/operations.md "Redis Cluster"). It holds the cluster exclusively, and starts the
// killed node again (it rejoins as a replica) before it lets go.
const CLUSTER_SCRIPT = fileURLToPath(new URL('../../scripts/redis-cluster.sh', import.meta.url))
await holdServiceLock(t, 'redis-cluster', 'exclusive', 300_000)
const available = await redisClusterAvailable()
const prefix = uniquePrefix('redis-failover')

/** The master that owns `slot`, by asking any live node. */
async function masterOf (slot: number): Promise<{ port: number, pid: number }> {
  for (const seed of clusterSeeds()) {
    const probe = new Redis({ ...seed, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    probe.on('error', () => {})
    try {
      await probe.connect()
      const shards = await probe.cluster('SLOTS') as unknown as Array<[number, number, [string, number]]>
      const owner = shards.find(([from, to]) => slot >= from && slot <= to)
      if (owner === undefined) continue
      const master = new Redis({ host: owner[2][0], port: owner[2][1] })
      const info = await master.info('server')
      master.disconnect()
      return { port: owner[2][1], pid: Number(/process_id:(\d+)/.exec(info)?.[1]) }
    } catch {
      continue
    } finally {
      probe.disconnect()
    }
  }
  throw new Error(`no live node knows the master of slot ${slot}`)
}

t.test('a master killed under live traffic: publishing resumes, no offset repeats, no silent gap', { timeout: 120_000 }, async (t) => {
  if (!requireService(t, 'Redis Cluster', available)) return
  t.teardown(async () => {
    // Whatever happened: the killed node back, the cluster healthy for the next file.
    await promisify(execFile)('bash', [CLUSTER_SCRIPT, 'start'])
  })
  const seen = new Map<string, Array<{ kind: 'event', epoch: string, offset: number } | { kind: 'reset', epoch: string }>>()
  const record = (channel: string, entry: { kind: 'event', epoch: string, offset: number } | { kind: 'reset', epoch: string }) => {
    const list = seen.get(channel) ?? []
    list.push(entry)
    seen.set(channel, list)
  }
  const options = { url: '', clusterNodes: clusterSeeds(), keyPrefix: prefix, historySize: 1000, historyTtlSeconds: 300, commandTimeoutMs: 1000, unsubscribeDelayMs: 50 }
  const publisher = new RedisBroker({ ...options, deliver: () => {} })
  const subscriber = new RedisBroker({
    ...options,
    deliver: (event: PublishedEvent) => record(event.channel, { kind: 'event', epoch: event.epoch, offset: event.offset }),
    reset: (channel: string, position: StreamPosition) => record(channel, { kind: 'reset', epoch: position.epoch })
  })
  t.teardown(async () => { await Promise.all([publisher.close(), subscriber.close()]) })
  t.ok(await publisher.waitUntilReady(10_000) && await subscriber.waitUntilReady(10_000), 'both nodes ready')

  // A victim channel and one in another shard, which must not notice.
  const victim = suiteChannel('victim')
  const victimMaster = await masterOf(slotOf(victim))
  let bystander = suiteChannel('bystander')
  while ((await masterOf(slotOf(bystander))).port === victimMaster.port) bystander = suiteChannel('bystander')
  const channels = [victim, bystander]
  for (const c of channels) await subscriber.subscribe(c)

  const published = new Map<string, PublishedEvent[]>(channels.map((c) => [c, []]))
  let failures = 0
  const traffic = { running: true }
  const done = (async () => {
    for (let n = 0; traffic.running; n++) {
      await Promise.all(channels.map(async (channel) => {
        try {
          published.get(channel)!.push(await publisher.publish({ channel, type: 'test:event', payload: { n } }))
        } catch {
          failures++
        }
      }))
      await sleep(10)
    }
  })()

  await sleep(1000)
  const before = published.get(victim)!.at(-1)!
  const resumeFrom: StreamPosition = { epoch: before.epoch, offset: before.offset }
  process.kill(victimMaster.pid, 'SIGKILL')
  const killedAt = Date.now()
  // Publishing to the victim's shard resumes once a replica is promoted.
  const countAtKill = published.get(victim)!.length
  while (published.get(victim)!.length < countAtKill + 20 && Date.now() - killedAt < 60_000) await sleep(100)
  const resumedAfterMs = Date.now() - killedAt
  await sleep(500)
  traffic.running = false
  await done
  t.ok(published.get(victim)!.length >= countAtKill + 20, `publishing to the failed shard resumed (${resumedAfterMs} ms after the kill; ${failures} publishes refused meanwhile)`)
  const after = published.get(victim)!.at(-1)!
  t.not(after.epoch, before.epoch, 'the promoted replica is a new Redis run: a new epoch, offsets from 1')

  // What the live subscriber saw: within an epoch, consecutive offsets; a new epoch only after a reset.
  await sleep(1500) // let the last events and any catch-up arrive
  for (const channel of channels) {
    const entries = seen.get(channel) ?? []
    let epoch: string | undefined
    let offset = 0
    let announced: string | undefined
    let broken = ''
    for (const entry of entries) {
      if (entry.kind === 'reset') {
        announced = entry.epoch
        continue
      }
      if (entry.epoch !== epoch) {
        if (epoch !== undefined && announced !== entry.epoch) broken ||= `epoch ${entry.epoch} began without a reset`
        epoch = entry.epoch
        offset = entry.offset - 1
        if (announced === undefined && entries.indexOf(entry) > 0) broken ||= 'a new epoch without a reset'
      }
      if (entry.offset !== offset + 1) broken ||= `offset ${entry.offset} after ${offset} in epoch ${epoch}`
      offset = entry.offset
    }
    t.equal(broken, '', `${channel}: no repeat, no going back, no gap without a reset`)
    const last = published.get(channel)!.at(-1)!
    t.same([epoch, offset], [last.epoch, last.offset], `${channel}: the subscriber reached the last event published`)
  }
  const bystanderEpochs = new Set(published.get(bystander)!.map((e) => e.epoch))
  t.equal(bystanderEpochs.size, 1, 'the other shard kept its epoch')

  // A client resuming from before the failover: every event, or recovered:false.
  const resumed = await subscriber.history(victim, resumeFrom)
  t.equal(resumed.recovered, false, 'resuming across the failover is told to reload (the new run may have lost writes)')
  t.same(resumed.position, { epoch: after.epoch, offset: after.offset })
  t.equal(new RedisLayout(prefix, 0, true).pubsubName(victim).endsWith(`{${victim}}`), true)
})

/** The replica of the master on `masterPort`, by asking that master (CLUSTER NODES), once it has synced with it. */
async function replicaOf (masterPort: number): Promise<{ port: number, pid: number }> {
  const master = new Redis({ host: '127.0.0.1', port: masterPort })
  try {
    const nodes = String(await master.cluster('NODES')).trim().split('\n').map((line) => line.split(' '))
    const self = nodes.find((fields) => fields[2].includes('myself'))!
    const replica = nodes.find((fields) => fields[3] === self[0])
    if (replica === undefined) throw new Error(`no replica of ${masterPort}`)
    const port = Number(/:(\d+)@/.exec(replica[1])?.[1])
    const node = new Redis({ host: '127.0.0.1', port })
    const info = await node.info('server')
    // A replica that has not synced yet (the node the test before killed, just back) would never take over.
    const synced = /master_link_status:up/.test(await node.info('replication'))
    node.disconnect()
    if (!synced) throw new Error(`the replica on ${port} has not synced yet`)
    return { port, pid: Number(/process_id:(\d+)/.exec(info)?.[1]) }
  } finally {
    master.disconnect()
  }
}

t.test('readiness: not ready while a shard has no master (killed, its replica unable to take over); ready again once one took over', { timeout: 120_000 }, async (t) => {
  // Audit: with no channel held on the failed shard, every connection of the gateway still
  // said ready, and /health/ready answered 200 while every publish was refused.
  if (!requireService(t, 'Redis Cluster', available)) return
  let stopped: number | undefined
  t.teardown(async () => {
    if (stopped !== undefined) { try { process.kill(stopped, 'SIGCONT') } catch {} }
    await promisify(execFile)('bash', [CLUSTER_SCRIPT, 'start'])
  })
  const broker = new RedisBroker({ url: '', clusterNodes: clusterSeeds(), keyPrefix: prefix, historySize: 100, historyTtlSeconds: 300, commandTimeoutMs: 1000, deliver: () => {} })
  t.teardown(async () => { await broker.close() })
  t.ok(await broker.waitUntilReady(10_000), 'connected')
  t.equal(await broker.servesAll(), true, 'a healthy cluster serves every slot')

  // A shard the broker holds no channel on (its control channel lives on one): nothing it holds goes unplaced.
  const controlMaster = await masterOf(slotOf(new RedisLayout(prefix, 0, true).controlChannel))
  let channel = suiteChannel('ready')
  while ((await masterOf(slotOf(channel))).port === controlMaster.port) channel = suiteChannel('ready')
  const master = await masterOf(slotOf(channel))
  // The node killed by the test before comes back as a replica: wait until this master has one.
  let replica: { port: number, pid: number } | undefined
  await eventually('the master has a replica in sync', async () => { replica = await replicaOf(master.port); return true }, 30_000)
  if (replica === undefined) return
  process.kill(replica.pid, 'SIGSTOP')
  stopped = replica.pid
  process.kill(master.pid, 'SIGKILL')
  const killedAt = Date.now()
  await eventually('readiness says the cluster does not serve every slot', async () => !await broker.servesAll(), 15_000)
  // Past the cluster's node timeout (2 s): every node has marked the master failed, and the slot map was re-read.
  for (let i = 0; i < 6; i++) {
    await sleep(1000)
    t.equal(await broker.servesAll(), false, `still not ready ${Math.round((Date.now() - killedAt) / 1000)} s after the kill, with no master for the shard`)
  }
  await t.rejects(broker.publish({ channel, type: 'test:event', payload: {} }), 'as a publish to that shard finds')

  process.kill(replica.pid, 'SIGCONT')
  stopped = undefined
  await eventually('readiness says ready once the replica took over', async () => await broker.servesAll(), 45_000)
  t.match(await broker.publish({ channel, type: 'test:event', payload: {} }), { channel }, 'and a publish to that shard is taken when it says so')
})

t.test('a master frozen past its failover wakes and runs the publish queued on its socket: subscribers never go back to its dead epoch', { timeout: 120_000 }, async (t) => {
  // Audit (SSE on a cluster behind nginx, a master stopped 30 s): the woken master's pub/sub
  // copy of that publish, in its dead epoch, came after the promoted replica's first events;
  // subscribers were reset back to the dead epoch, then forward again with a replay of the
  // new one (thousands of duplicates).
  if (!requireService(t, 'Redis Cluster', available)) return
  let frozen: number | undefined
  t.teardown(async () => {
    if (frozen !== undefined) { try { process.kill(frozen, 'SIGCONT') } catch {} }
    await promisify(execFile)('bash', [CLUSTER_SCRIPT, 'start'])
  })
  const seen: string[] = []
  const options = { url: '', clusterNodes: clusterSeeds(), keyPrefix: prefix, historySize: 100, historyTtlSeconds: 300, commandTimeoutMs: 1000, unsubscribeDelayMs: 50 }
  const publisher = new RedisBroker({ ...options, deliver: () => {} })
  const subscriber = new RedisBroker({
    ...options,
    deliver: (event: PublishedEvent) => seen.push(`${event.epoch}:${event.offset}`),
    reset: (_channel: string, position: StreamPosition) => seen.push(`reset ${position.epoch}:${position.offset}`)
  })
  t.teardown(async () => { await Promise.all([publisher.close(), subscriber.close()]) })
  t.ok(await publisher.waitUntilReady(10_000) && await subscriber.waitUntilReady(10_000), 'both nodes ready')

  const channel = suiteChannel('frozen')
  const master = await masterOf(slotOf(channel))
  await eventually('the master has a replica in sync', async () => { await replicaOf(master.port); return true }, 30_000)
  await subscriber.subscribe(channel)
  let last: PublishedEvent | undefined
  for (let n = 0; n < 3; n++) last = await publisher.publish({ channel, type: 'test:event', payload: { n } })
  const oldEpoch = last!.epoch

  process.kill(master.pid, 'SIGSTOP')
  frozen = master.pid
  // Sent to the frozen master: it times out here, and waits on the master's socket.
  await t.rejects(publisher.publish({ channel, type: 'test:event', payload: { queued: true } }), 'a publish to the frozen master times out')
  let promoted: PublishedEvent | undefined
  await eventually('a replica took over and publishes in a new epoch', async () => {
    try {
      promoted = await publisher.publish({ channel, type: 'test:event', payload: { promoted: true } })
      return true
    } catch { return false }
  }, 30_000)
  t.not(promoted!.epoch, oldEpoch, 'the promoted replica counts in a new epoch')
  await eventually('the subscriber is in the new epoch', async () => seen.includes(`${promoted!.epoch}:${promoted!.offset}`), 10_000)

  process.kill(master.pid, 'SIGCONT')
  frozen = undefined
  await sleep(1500) // the woken master runs what was queued on its socket, then learns it lost its slots
  let after: PublishedEvent | undefined
  for (let n = 0; n < 3; n++) after = await publisher.publish({ channel, type: 'test:event', payload: { after: n } })
  await eventually('the subscriber reached the last event', async () => seen.at(-1) === `${after!.epoch}:${after!.offset}`, 10_000)
  const entered = seen.indexOf(`reset ${promoted!.epoch}:0`)
  t.ok(entered > 0, `the new epoch was announced by a reset (${seen.join(' ')})`)
  t.same(seen.slice(entered + 1).filter((entry) => entry.includes(oldEpoch)), [], 'nothing of the dead epoch after it')
  const newEpoch = seen.slice(entered + 1).map((entry) => entry.replace('reset ', ''))
  t.same(newEpoch, [...new Set(newEpoch)], 'and nothing of the new one twice')
})
