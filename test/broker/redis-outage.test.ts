import { Writable } from 'node:stream'
import t from 'tap'
import { loggerOptions } from '../../lib/ops/logging.js'
import { adminToken, post, serviceToken, startServer, token, WsClient } from '../support/helper.js'
import { eventually, OwnRedis, redisClient } from '../support/redis-fixture.js'

// These tests run their own redis-server (on PATH), killed and restarted at will.

async function health (url: string, path: string) {
  const res = await fetch(`${url}${path}`)
  return { status: res.status, body: await res.json() as any }
}

const publish = (url: string, n: number) =>
  post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:3', type: 'stock', payload: { n } })

t.test('Redis dies and comes back: 503s meanwhile, clients stay, delivery resumes', async (t) => {
  const redis = await OwnRedis.start(t)
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, done) { lines.push(String(chunk)); done() } })
  const { url, wsUrl } = await startServer(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'outage:' }, { logger: { ...loggerOptions('info'), stream: sink } })
  const client = await WsClient.connect(t, wsUrl, token('8'))
  await client.subscribe(['product:3'])
  t.equal((await publish(url, 1)).status, 202)
  t.match(await client.next((f) => f.channel === 'product:3'), { offset: 1, payload: { n: 1 } })
  t.match(await health(url, '/health/ready'), { status: 200, body: { checks: { redis: 'ok' } } })

  await redis.kill()
  await eventually('readiness reports redis down', async () => (await health(url, '/health/ready')).status === 503)
  t.match(await health(url, '/health/ready'), { status: 503, body: { status: 'not_ready', unavailable: ['redis'] } })
  t.equal((await health(url, '/health/live')).status, 200, 'alive all the same')
  for (let n = 2; n <= 4; n++) {
    const res = await publish(url, n)
    t.equal(res.status, 503, 'a publish that went nowhere is never a 202')
    t.equal(res.headers.get('retry-after'), '1')
  }
  t.equal((await post(`${url}/realtime/notify`, serviceToken(), { userId: '8', payload: {} })).status, 503)
  t.match(await client.request({ type: 'system:ping' }), { type: 'system:pong' }, 'the WebSocket client is still connected')
  const stats = await fetch(`${url}/realtime/stats`, { headers: { authorization: `Bearer ${adminToken()}` } })
  t.equal(stats.status, 503, 'cluster stats cannot be read: 503, not a partial answer')
  // product:99 is held by no client here, so its counts must come from Redis.
  const presence = await fetch(`${url}/realtime/presence/product:99`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.equal(presence.status, 503, 'nor presence over every instance: 503, not a 500')
  t.match(await presence.json(), { message: 'the event broker is unavailable; try again' }, 'a read does not say nothing was published')
  t.equal(presence.headers.get('retry-after'), '1')
  const history = await fetch(`${url}/realtime/history/product:3`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.equal(history.status, 503, 'nor history')
  t.match(await publish(url, 4), { status: 503, body: { message: 'the event broker is unavailable; nothing was published' } })
  // Audit: one error line with a stack trace per failed request (5 MB of log over a few outages).
  const failures = lines.filter((l) => l.includes('request failed'))
  t.equal(failures.length, 1, `one line for the 8 requests that failed within seconds: ${failures.join('')}`)
  t.notMatch(failures[0], /"stack"/, 'with no stack trace')

  await redis.restart()
  await eventually('ready again after redis returns', async () => (await health(url, '/health/ready')).status === 200, 20_000)
  const res = await publish(url, 5)
  t.equal(res.status, 202)
  // Redis came back empty (no persistence): a new epoch, counting from 1 again, announced
  // to the live subscriber before the channel's next event.
  const reset = await client.next((f) => f.channel === 'product:3')
  t.match(reset, { type: 'system:reset', payload: { position: { offset: 0 } } }, 'system:reset first')
  t.match(await client.next((f) => f.channel === 'product:3'), { payload: { n: 5 }, offset: 1 },
    'the held subscription was restored: the publish reaches the client (no centrifugo#1189)')
  const notify = await post(`${url}/realtime/notify`, serviceToken(), { userId: '8', payload: { back: true } })
  t.equal(notify.status, 202)
  t.match(await client.next((f) => f.channel === 'user:8'), { type: 'system:reset' }, 'the user channel is reset too')
  t.match(await client.next((f) => f.channel === 'user:8'), { payload: { back: true }, offset: 1 }, 'and gets its event')
  t.same(client.events(), [], 'no stray or doubled events')
})

t.test('a Redis that hangs (SIGSTOP) makes the instance not ready; it recovers on SIGCONT', async (t) => {
  const redis = await OwnRedis.start(t)
  const { url, wsUrl } = await startServer(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'hang:' })
  const client = await WsClient.connect(t, wsUrl, token('9'))
  await client.subscribe(['product:3'])

  redis.pause()
  const res = await publish(url, 1)
  t.equal(res.status, 503, 'a publish to a hung Redis fails after the command timeout')
  t.match(res.body.message, /did not answer in time; the publish may still be taken: retry with the same Idempotency-Key/,
    'and says its outcome is unknown, never "nothing was published"')
  t.equal(res.headers.get('retry-after'), '1')
  await eventually('readiness notices the hang', async () => (await health(url, '/health/ready')).status === 503, 20_000)
  redis.resume()
  await eventually('ready again', async () => (await health(url, '/health/ready')).status === 200, 20_000)
  t.equal((await publish(url, 2)).status, 202)
  // The timed-out publish sat in Redis's socket buffer and may have run once Redis woke:
  // a 503 after a timeout means "unknown", not "not published". Either way the client
  // gets the channel's events in offset order, with nothing skipped.
  const events = [await client.next((f) => f.channel === 'product:3', 10_000)]
  while (events.at(-1)?.payload.n !== 2) events.push(await client.next((f) => f.channel === 'product:3', 10_000))
  t.ok(events.length <= 2, 'at most the uncertain event before it')
  t.same(events.map((e) => e.offset), events.map((_, i) => i + 1), 'delivery resumes in offset order, no gap')
})

t.test('an instance started while Redis is down starts not ready and becomes ready when it appears', async (t) => {
  const redis = await OwnRedis.reserve(t)
  const { url, wsUrl } = await startServer(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'late:' })
  t.match(await health(url, '/health/ready'), { status: 503, body: { unavailable: ['redis'] } })
  t.equal((await health(url, '/health/live')).status, 200)
  t.equal((await publish(url, 1)).status, 503)
  await redis.restart()
  await eventually('ready once redis is up', async () => (await health(url, '/health/ready')).status === 200, 20_000)
  const client = await WsClient.connect(t, wsUrl, token('10'))
  await client.subscribe(['product:3'])
  t.equal((await publish(url, 2)).status, 202)
  t.match(await client.next((f) => f.channel === 'product:3'), { offset: 1, payload: { n: 2 } })
})

t.test('blips that cut both of an instance\'s Redis connections under a steady stream: every event arrives, in order, none announced as lost', async (t) => {
  const redis = await OwnRedis.start(t)
  const settings = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'blip:', HISTORY_SIZE: 1000 }
  const receiving = await startServer(t, { ...settings, NODE_ID: 'blip-receiver' })
  const publishing = await startServer(t, { ...settings, NODE_ID: 'blip-publisher' })
  const client = await WsClient.connect(t, receiving.wsUrl, token('11'))
  const frames: Array<Record<string, any>> = []
  client.socket.on('message', (data) => {
    const frame = JSON.parse(String(data)) as Record<string, any>
    if (frame.channel === 'product:3' && (frame.offset !== undefined || frame.type === 'system:reset')) frames.push(frame)
  })
  await client.subscribe(['product:3'])

  const admin = await redisClient(t, undefined, redis.url)
  // The receiving instance's connections (commands and subscriber) cut at once, as a network blip would.
  const cut = async (): Promise<void> => {
    const list = String(await admin.call('CLIENT', 'LIST'))
    for (const line of list.split('\n')) {
      const id = /\bid=(\d+)/.exec(line)?.[1]
      if (id !== undefined && /\bname=rtg-blip-receiver/.test(line)) await admin.call('CLIENT', 'KILL', 'ID', id).catch(() => {})
    }
  }
  let accepted = 0
  for (let n = 1; n <= 150; n++) {
    if (n % 50 === 25) await cut()
    if ((await publish(publishing.url, n)).status === 202) accepted++
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  t.equal(accepted, 150, 'the publishing instance was never cut')
  await eventually('every event delivered', () => frames.some((f) => f.payload?.n === 150), 20_000)
  t.same(frames.filter((f) => f.type === 'system:reset'), [], 'no reset: history still held what the blips kept from pub/sub')
  t.same(frames.map((f) => f.offset), Array.from({ length: 150 }, (_, i) => i + 1), 'each event once, in offset order')
})

t.test('Redis refuses the gateway\'s password after a rotation: the refusal is logged, the password never', async (t) => {
  // Audit: ioredis's error carries the AUTH command with its arguments, and it was logged whole.
  const redis = await OwnRedis.start(t)
  const admin = await redisClient(t, undefined, redis.url)
  await admin.call('ACL', 'SETUSER', 'gateway', 'on', '>first-Secret-pw', '~*', '&*', '+@all')
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, done) { lines.push(String(chunk)); done() } })
  const { host } = new URL(redis.url)
  await startServer(t, { REDIS_URL: `redis://gateway:first-Secret-pw@${host}`, REDIS_KEY_PREFIX: 'rotated:' }, { logger: { ...loggerOptions('info'), stream: sink } })
  await admin.call('ACL', 'SETUSER', 'gateway', 'resetpass', '>second-Secret-pw')
  await admin.call('CLIENT', 'KILL', 'USER', 'gateway')
  await eventually('the refused AUTH logged', () => lines.some((l) => l.includes('WRONGPASS')))
  const refused = lines.find((l) => l.includes('WRONGPASS')) as string
  t.match(refused, /"command":\{"name":"auth","args":"\[REDACTED\]"\}/, 'the failed command is named, its arguments are not')
  t.notOk(lines.some((l) => l.includes('first-Secret-pw')), 'no line holds the password')
})
