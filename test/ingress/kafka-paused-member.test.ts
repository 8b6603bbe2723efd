import t from 'tap'
import { requireService, serviceToken, sleep, TEST_SECRET } from '../support/helper.js'
import { gateway, kafkaFixture, useKafka, waitForReadiness } from '../support/kafka-fixture.js'
import { freePort } from '../support/ports.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'
import { buildServer, spawnServer } from '../support/server-process.js'

// Effectively once from Kafka (docs/protocol.md, Kafka) when a member is paused past the
// group's session timeout (a frozen VM or container, SIGSTOP): the group gives its
// partition to another member, which publishes on; the paused one wakes up holding a batch
// fetched before the pause and must not publish it again.
const redisUp = await redisAvailable()

const CHANNEL = 'room:paused'

async function historyOf (url: string): Promise<number[]> {
  const res = await fetch(`${url}/realtime/history/${CHANNEL}?limit=10000`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  const body = await res.json() as { events: Array<{ payload: { n: number } }> }
  return body.events.map((e) => e.payload.n)
}

t.test('a member paused past the session timeout wakes up and publishes nothing the group\'s new owner already did', async (t) => {
  if (!await useKafka(t)) return
  if (!requireService(t, 'Redis', redisUp)) return
  const kafka = await kafkaFixture(t, 1)
  const prefix = uniquePrefix('kafka-paused')
  await redisClient(t, prefix)
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix, HISTORY_POLICY: 'room:=10000/600' }

  // The member to be paused, in a process of its own.
  const port = await freePort()
  const paused = spawnServer(t, await buildServer(), {
    ...kafka.env, ...settings, JWT_SECRET: TEST_SECRET, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', NODE_ID: 'paused'
  })
  const pausedUrl = `http://127.0.0.1:${port}`
  await paused.waitForOutput('Server listening')
  await waitForReadiness(pausedUrl, 200, 45_000)

  // A steady stream, one message every 20 ms, for the whole test.
  let produced = 0
  const flow = { producing: true }
  const stream = (async () => {
    while (flow.producing) {
      await kafka.produce('realtime.publish', { channel: CHANNEL, type: 'tick', payload: { n: produced } })
      produced++
      await sleep(20)
    }
  })()
  t.teardown(() => { flow.producing = false })
  for (let i = 0; i < 100 && (await historyOf(pausedUrl)).length < 50; i++) await sleep(100)
  t.ok((await historyOf(pausedUrl)).length >= 50, 'the member consumes the stream')

  paused.child.kill('SIGSTOP')
  // Another member joins; the group waits out the paused one's session (10 s), then gives it the partition.
  const owner = await gateway(t, kafka, settings)
  const before = (await historyOf(owner.url)).length
  for (let i = 0; i < 100 && (await historyOf(owner.url)).length < before + 100; i++) await sleep(100)
  t.ok((await historyOf(owner.url)).length >= before + 100, 'the new owner publishes on, past where the paused member fetched')

  paused.child.kill('SIGCONT')
  await sleep(4000) // the woken member handles what it held, finds it was dropped, and rejoins
  flow.producing = false
  await stream
  let seen: number[] = []
  for (let i = 0; i < 150 && (seen = await historyOf(owner.url)).length < produced; i++) await sleep(100)

  const counts = new Map<number, number>()
  for (const n of seen) counts.set(n, (counts.get(n) ?? 0) + 1)
  const twice = [...counts].filter(([, c]) => c > 1).map(([n]) => n)
  t.same(twice, [], 'no message published twice')
  t.equal(counts.size, produced, `every one of the ${produced} messages published`)
  t.equal(seen.length, produced, 'one offset each')
})
