import fc from 'fast-check'
import t from 'tap'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import { pubsubBufferLimit, pubsubLimitTooLow, RECOMMENDED_PUBSUB_LIMIT } from '../../lib/broker/redis-server-config.js'
import { requireService } from '../support/helper.js'
import { OwnRedis, redisAvailable } from '../support/redis-fixture.js'

/**
 * Redis cuts a pub/sub connection whose output buffer passes `client-output-buffer-limit
 * pubsub`; a gateway draining a Kafka backlog was cut at Redis's default (32 MB) and lost
 * events on its busiest channels (bench/README.md, "Session 13"). The gateway reads the
 * setting at start and warns below docs/operations.md's recommendation.
 */
t.test('the pub/sub class of CONFIG GET client-output-buffer-limit', async (t) => {
  t.same(pubsubBufferLimit('normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60'),
    { hardBytes: 33554432, softBytes: 8388608, softSeconds: 60 })
  t.equal(pubsubBufferLimit('normal 0 0 0 slave 268435456 67108864 60'), undefined, 'no pubsub class')
  t.equal(pubsubBufferLimit('pubsub 1 2'), undefined, 'cut short')
  t.equal(pubsubBufferLimit('pubsub 1mb 2 3'), undefined, 'not in bytes')
  t.ok(pubsubLimitTooLow({ hardBytes: 33554432, softBytes: 8388608, softSeconds: 60 }), "Redis's default is too low")
  t.notOk(pubsubLimitTooLow({ hardBytes: 268435456, softBytes: 134217728, softSeconds: 60 }), 'the recommendation is not')
  t.notOk(pubsubLimitTooLow({ hardBytes: 0, softBytes: 0, softSeconds: 0 }), 'no limit at all is not')
  t.ok(pubsubLimitTooLow({ hardBytes: 0, softBytes: 1024, softSeconds: 10 }), 'a low soft limit alone is')
  fc.assert(fc.property(fc.string({ maxLength: 80 }), fc.array(fc.nat(), { minLength: 3, maxLength: 3 }), (noise, [hard, soft, seconds]) => {
    const parsed = pubsubBufferLimit(noise)
    if (parsed !== undefined && ![parsed.hardBytes, parsed.softBytes, parsed.softSeconds].every(Number.isSafeInteger)) throw new Error('not numbers')
    const clean = noise.replace(/pubsub/g, '')
    const found = pubsubBufferLimit(`${clean} pubsub ${hard} ${soft} ${seconds}`)
    if (/\S/.test(clean) && found !== undefined && (found.hardBytes !== hard || found.softBytes !== soft || found.softSeconds !== seconds)) {
      throw new Error(`read ${JSON.stringify(found)}`)
    }
    if (found === undefined) throw new Error('the pubsub class was not found')
  }), { numRuns: 1000 })
})

t.test('a gateway warns at start when Redis would cut its subscriber early, and not once it is set as recommended', async (t) => {
  if (!requireService(t, 'Redis', await redisAvailable())) return
  const redis = await OwnRedis.start(t)
  const start = async (): Promise<string[]> => {
    const warnings: string[] = []
    const log = { info () {}, warn (_obj: unknown, msg?: string) { warnings.push(String(msg)) } }
    const broker = new RedisBroker({ url: redis.url, keyPrefix: 'cfg:', deliver: () => {}, historySize: 10, historyTtlSeconds: 60, log })
    t.teardown(() => broker.close())
    t.ok(await broker.waitUntilReady(5000), 'ready')
    await broker.serverSettingsChecked
    await broker.close()
    return warnings
  }
  const warned = await start()
  t.match(warned.join('\n'), /client-output-buffer-limit pubsub/, "Redis's default limit is warned about")
  const admin = new (await import('ioredis')).Redis(redis.url)
  t.teardown(() => admin.quit())
  await admin.config('SET', 'client-output-buffer-limit', RECOMMENDED_PUBSUB_LIMIT)
  t.notMatch((await start()).join('\n'), /client-output-buffer-limit/, 'the recommended limit is not')
})
