import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import { functionLibrary } from '../../lib/broker/redis-functions.js'
import { DeliveryRecorder, suiteChannel } from '../support/broker-suite.js'
import { requireService } from '../support/helper.js'
import { eventually, OwnRedis, redisAvailable, redisClient } from '../support/redis-fixture.js'
import { monitorRedis } from '../support/redis-monitor.js'

/**
 * The broker's Lua runs as a Redis Function library (lib/broker/redis-functions.ts) so the
 * server's run_id, which decides the epoch base (lib/broker/redis-layout.ts), is asked for
 * once per server process. What must hold: it is not asked per call, and a new process
 * (here a restart that kept its data and its functions) still sees its own run_id, so a
 * stream that may have lost writes starts a new epoch.
 */
const available = await redisAvailable()

async function broker (t: Test, url: string): Promise<RedisBroker> {
  const b = new RedisBroker({ url, keyPrefix: 'fn:', deliver: new DeliveryRecorder().deliver, historySize: 10, historyTtlSeconds: 300 })
  t.teardown(() => b.close())
  if (!await b.waitUntilReady(5000)) throw new Error('RedisBroker not ready')
  return b
}

const draft = (channel: string, n: number) => ({ channel, type: 'test:event', payload: { n } })

t.test('the run_id is read once per server process, not per call', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t)
  const b = await broker(t, own.url)
  const channel = suiteChannel('once')
  await b.publish(draft(channel, 0))
  const monitor = await monitorRedis(t, own.url)
  const fromLua: string[] = []
  let calls = 0
  monitor.onCommand((args, source) => {
    if (source === 'lua') fromLua.push(args[0].toLowerCase())
    if (args[0].toLowerCase() === 'fcall') calls++
  })
  for (let n = 1; n <= 10; n++) await b.publish(draft(channel, n))
  await b.publishBatch([draft(channel, 11), draft(suiteChannel('once-2'), 1)])
  await b.history(channel, { offset: 3 })
  await eventually('MONITOR saw the 12 calls', () => calls === 12 && fromLua.includes('lrange'))
  t.ok(fromLua.includes('publish'), 'MONITOR shows what the functions do')
  t.notOk(fromLua.includes('info'), 'and no INFO among it')
})

t.test('a restarted server that kept its data and functions starts new epochs (no offset handed out twice)', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const dataDir = await mkdtemp(join(tmpdir(), 'rtg-own-redis-'))
  t.teardown(async () => { await rm(dataDir, { recursive: true, force: true }) })
  const own = await OwnRedis.start(t, { dataDir })
  const b = await broker(t, own.url)
  const channel = suiteChannel('restarted')
  for (let n = 1; n <= 3; n++) await b.publish(draft(channel, n))
  const before = await b.position(channel)
  await own.kill()
  await own.restart()
  const admin = await redisClient(t, undefined, own.url)
  const libraries = await admin.function('LIST') as unknown[][]
  t.ok(libraries.some((lib) => lib.includes(functionLibrary(false).name)), 'the library came back with the data')
  t.ok(await admin.exists(`fn:hist:${channel}`), 'and so did the history')
  await eventually('the broker is ready again', () => b.isReady())
  const after = await b.publish(draft(channel, 4))
  t.equal(after.offset, 1, 'offsets start again...')
  t.not(after.epoch, before.epoch, '...in a new epoch')
  const resumed = await b.history(channel, { offset: 2, epoch: before.epoch })
  t.equal(resumed.recovered, false, 'a client resuming from before the restart is told to reload')
})
