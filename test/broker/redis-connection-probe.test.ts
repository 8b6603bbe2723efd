import t from 'tap'
import { Redis } from 'ioredis'
import { ConnectionProbe, failFastConnection } from '../../lib/broker/redis-connection.js'
import { requireService } from '../support/helper.js'
import { eventually, OwnRedis, REDIS_URL, redisAvailable, uniquePrefix } from '../support/redis-fixture.js'

/**
 * The probe PINGs every connection and reconnects one whose answer does not come within the
 * command timeout: a Redis that hangs, or a peer gone silent, keeps the socket open. A PING
 * on a subscriber connection is answered after every message queued before it, though, so a
 * subscriber that is only behind (other instances' bursts, a busy event loop) answered late
 * and was cut, losing its place: every held channel then had to be caught up from history.
 */
const available = await redisAvailable()
const prefix = uniquePrefix('probe')
const PROBE_MS = 50
const TIMEOUT_MS = 150

interface Warning { msg: string }

function logger (): { warnings: Warning[], log: { info: () => void, warn: (obj: object, msg: string) => void } } {
  const warnings: Warning[] = []
  return { warnings, log: { info: () => {}, warn: (_obj, msg) => warnings.push({ msg }) } }
}

/** Blocks the event loop for `ms`: a gateway busy with something else between two reads. */
function busy (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy */ }
}

t.test('a subscriber that is behind but reading is not cut, however late its PING is answered', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { warnings, log } = logger()
  const subscriber = failFastConnection(REDIS_URL, { name: `${prefix}slow-sub`, commandTimeoutMs: TIMEOUT_MS, log })
  const publisher = new Redis(REDIS_URL)
  t.teardown(() => { subscriber.disconnect(); publisher.disconnect() })
  const channel = `${prefix}burst`
  await eventually('the subscriber connected', () => subscriber.status === 'ready')
  const id = await subscriber.client('ID')
  await subscriber.subscribe(channel)
  const received: number[] = []
  subscriber.on('message', (_name: string, message: string) => {
    busy(0.3)
    received.push(Number(message.slice(0, message.indexOf(':'))))
  })
  const probe = new ConnectionProbe([subscriber], PROBE_MS, log)
  t.teardown(() => probe.stop())
  // 4000 messages of ~1 KB queued at once (4 MB, within Redis's default pub/sub limits): at
  // 0.3 ms each the subscriber is behind for more than a second, its PINGs answered that late.
  const count = 4000
  await publisher.eval(`for i = 1, ${count} do redis.call('PUBLISH', KEYS[1], i .. ':' .. ARGV[1]) end`, 1, channel, 'x'.repeat(1000))
  const started = performance.now()
  await eventually('every message read', () => received.length >= count || subscriber.status !== 'ready', 30_000)
  const behindMs = performance.now() - started
  t.ok(behindMs > 3 * TIMEOUT_MS, `the subscriber was behind for ${Math.round(behindMs)} ms, past the ${TIMEOUT_MS} ms timeout`)
  t.same(warnings, [], 'no PING taken for a dead connection')
  t.equal(subscriber.status, 'ready', 'still connected')
  t.equal(received.length, count, 'every message read')
  t.ok(received.every((n, i) => n === i + 1), 'once each, in order')
  // Back from the burst, the probe works on: PINGs are answered in time again.
  await new Promise((resolve) => setTimeout(resolve, 4 * PROBE_MS))
  t.equal(await publisher.client('LIST', 'ID', Number(id)).then((list) => (list as string).includes(`id=${id} `)), true, 'the same connection as before the burst')
  t.same(warnings, [])
})

t.test('a connection that reads nothing while its PING is unanswered is reconnected (a Redis that hangs)', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await OwnRedis.start(t)
  const { warnings, log } = logger()
  const connection = failFastConnection(redis.url, { name: `${prefix}hang`, commandTimeoutMs: TIMEOUT_MS, log, redisOptions: { retryStrategy: () => 200 } })
  t.teardown(() => connection.disconnect())
  await eventually('connected', () => connection.status === 'ready')
  const probe = new ConnectionProbe([connection], PROBE_MS, log)
  t.teardown(() => probe.stop())
  redis.pause()
  t.teardown(() => redis.resume())
  await eventually('the probe gives the connection up', () => warnings.some((w) => w.msg.includes('did not answer a ping')), 10_000)
  // ioredis ends the socket and destroys it when the peer does not close its side (2 s).
  await eventually('and drops it to reconnect', () => connection.status !== 'ready', 10_000)
  redis.resume()
  await eventually('connected again once Redis answers', () => connection.status === 'ready', 10_000)
  t.equal(await connection.ping(), 'PONG')
})
