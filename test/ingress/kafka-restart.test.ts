import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { startServer, token, WsClient } from '../support/helper.js'
import { gateway, kafkaFixture, kafkaReachable, useKafka, waitForReadiness } from '../support/kafka-fixture.js'

/**
 * Kafka itself restarted under a running gateway. In a file of its own: it holds the
 * Kafka test lock exclusively, so no other Kafka test runs while the broker is away.
 */
const run = promisify(execFile)

async function script (name: string, timeoutMs: number): Promise<void> {
  await run('bash', [`scripts/${name}`], { cwd: new URL('../..', import.meta.url).pathname, timeout: timeoutMs })
}

t.test('Kafka restarted under a running gateway: readiness 503, then it rejoins and resumes', async (t) => {
  if (!await useKafka(t, 'exclusive')) return
  // Whatever happens below, leave a broker running for everyone else.
  t.teardown(async () => { if (!await kafkaReachable()) await script('services-start.sh', 150_000) })

  const kafka = await kafkaFixture(t)
  const { url, wsUrl } = await gateway(t, kafka, { LOG_LEVEL: process.env.KAFKA_TEST_LOG ?? 'silent' })
  const buyer = await WsClient.connect(t, wsUrl, token('u11'))
  await kafka.produce('order.updated', { orderId: 'o11', buyerId: 'u11', status: 'before' }, { key: 'o11' })
  t.equal((await buyer.next((f) => f.type === 'order:updated', 15_000)).payload.status, 'before')

  let since = Date.now()
  await script('services-stop.sh', 60_000)
  t.comment(`Kafka stopped in ${Date.now() - since} ms`)
  since = Date.now()
  if (await kafkaReachable()) {
    t.fail('Kafka still answers after scripts/services-stop.sh: it was not started by scripts/services-start.sh')
    return
  }
  const down = await waitForReadiness(url, 503, 60_000)
  t.match(down, { status: 'not_ready', checks: { kafka: 'unavailable' }, unavailable: ['kafka'] })
  t.comment(`readiness 503 ${Date.now() - since} ms after the broker was gone`)
  since = Date.now()

  // A gateway booted while Kafka is away still serves, reports 503, and joins later.
  const late = await startServer(t, { ...kafka.env, KAFKA_GROUP_ID: `${kafka.groupId}-late` })
  t.equal((await fetch(`${late.url}/health`)).status, 200, 'it serves without Kafka')
  t.match(await waitForReadiness(late.url, 503, 5000), { checks: { kafka: 'unavailable' } })
  const lateBuyer = await WsClient.connect(t, late.wsUrl, token('u11'))

  await script('services-start.sh', 150_000)
  t.comment(`Kafka started in ${Date.now() - since} ms`)
  since = Date.now()
  const up = await waitForReadiness(url, 200, 90_000)
  t.comment(`readiness 200 ${Date.now() - since} ms after the broker answered`)
  t.match(up, { status: 'ready', checks: { kafka: 'ok' } })

  await kafka.produce('order.updated', { orderId: 'o11', buyerId: 'u11', status: 'after' }, { key: 'o11' })
  t.equal((await buyer.next((f) => f.type === 'order:updated', 30_000)).payload.status, 'after', 'consumption resumed')
  await kafka.produce('order.updated', '{oops')
  const dlq = await kafka.readDlq(1, 30_000)
  t.equal(dlq[0]?.value?.toString(), '{oops', 'the DLQ producer reconnected too')
  t.same(buyer.events(), [], 'nothing twice')

  await waitForReadiness(late.url, 200, 90_000)
  const lateEvents = [
    await lateBuyer.next((f) => f.type === 'order:updated', 30_000),
    await lateBuyer.next((f) => f.type === 'order:updated', 30_000)
  ]
  t.same(lateEvents.map((f) => f.payload.status), ['before', 'after'], 'a new group starts at the earliest message')
})

t.test('Kafka frozen (SIGSTOP) under a running gateway: readiness 503 naming kafka, then 200 again once it thaws', async (t) => {
  // Audit: a hung broker drops no connection and raises no event; readiness said 200 through a 75 s freeze.
  if (!await useKafka(t, 'exclusive')) return
  const cache = process.env.KAFKA_HOME_CACHE ?? join(homedir(), '.cache', 'realtime-gateway-kafka')
  const pid = Number((await readFile(join(cache, `broker-${process.env.KAFKA_PORT ?? '9092'}`, 'kafka.pid'), 'utf8').catch(() => '')).trim())
  if (!Number.isInteger(pid) || pid <= 0) {
    t.fail(`no pid file for the broker under ${cache}: it was not started by scripts/services-start.sh`)
    return
  }
  let frozen = false
  t.teardown(() => { if (frozen) process.kill(pid, 'SIGCONT') })

  const kafka = await kafkaFixture(t)
  const { url, wsUrl } = await gateway(t, kafka, { LOG_LEVEL: process.env.KAFKA_TEST_LOG ?? 'silent' })
  const buyer = await WsClient.connect(t, wsUrl, token('u12'))
  await waitForReadiness(url, 200, 60_000)
  // An idle member heartbeats every few seconds: twelve seconds of nothing to read stay ready.
  for (const deadline = Date.now() + 12_000; Date.now() < deadline;) {
    const res = await fetch(`${url}/health/ready`)
    if (res.status !== 200) t.fail(`readiness ${res.status} while idle: ${await res.text()}`)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }

  process.kill(pid, 'SIGSTOP')
  frozen = true
  const since = Date.now()
  t.match(await waitForReadiness(url, 503, 30_000), { checks: { kafka: 'unavailable' }, unavailable: ['kafka'] })
  t.comment(`readiness 503 ${Date.now() - since} ms into the freeze`)
  process.kill(pid, 'SIGCONT')
  frozen = false
  await waitForReadiness(url, 200, 90_000)
  await kafka.produce('order.updated', { orderId: 'o12', buyerId: 'u12', status: 'thawed' }, { key: 'o12' })
  t.equal((await buyer.next((f) => f.type === 'order:updated', 30_000)).payload.status, 'thawed', 'consumption goes on')
})
