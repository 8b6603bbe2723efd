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
import { clusterSeeds, redisClusterAvailable, uniquePrefix } from '../support/redis-fixture.js'
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
