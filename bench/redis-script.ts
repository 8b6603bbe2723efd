import { Redis } from 'ioredis'
import { RedisBroker } from '../lib/broker/redis-broker.js'
import type { EventDraft } from '../lib/core/event.js'
import { kafkaSource, withKafkaOrigin } from '../lib/ingress/idempotency.js'
import { mapKafkaMessage } from '../lib/ingress/kafka-mapping.js'
import { mixMessage } from './lib/kafka-mix.js'

/**
 * What one event costs Redis in the publish script (issue 18, Kafka ingest: Redis was its
 * bound). Publishes the Kafka benchmark's mix (bench/lib/kafka-mix.ts, mapped by the
 * gateway's own mapping, each draft with its Kafka origin) through a RedisBroker, in calls
 * of `--batch` events as the Kafka ingest makes them, and reads Redis's own accounting
 * (INFO commandstats: the microseconds spent in FCALL, EVALSHA or EVAL) before and after.
 *
 *   npm run bench:redis-script -- [--events=100000] [--batch=500] [--redis=redis://127.0.0.1:6379]
 *
 * Prints Redis µs per event (the server's time in the script, the figure that bounds the
 * ingest), the client's wall time per event, and calls per second. Keys under a unique
 * prefix, deleted afterwards. Nothing subscribes: the PUBLISHes reach no one, as on an
 * instance whose clients are elsewhere.
 */
const arg = (name: string, fallback: string): string =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const EVENTS = Number(arg('events', '100000'))
const BATCH = Number(arg('batch', '500'))
const URL = arg('redis', 'redis://127.0.0.1:6379')

function drafts (count: number): EventDraft[] {
  const out: EventDraft[] = []
  for (let i = 0; out.length < count; i++) {
    const { topic, value } = mixMessage(i, 0)
    const result = mapKafkaMessage(topic, Buffer.from(value), { lowStockThreshold: 5 })
    if (result.ok) out.push(...withKafkaOrigin(result.drafts, kafkaSource(topic, 0), String(i)))
  }
  return out.slice(0, count)
}

async function scriptMicros (redis: Redis): Promise<number> {
  const info = await redis.info('commandstats')
  let usec = 0
  for (const match of info.matchAll(/cmdstat_(?:evalsha|eval|fcall):calls=\d+,usec=(\d+)/g)) usec += Number(match[1])
  return usec
}

async function main (): Promise<void> {
  const prefix = `rtg-bench-script-${process.pid}-${Date.now()}:`
  const broker = new RedisBroker({ url: URL, keyPrefix: prefix, deliver: () => {}, historySize: 100, historyTtlSeconds: 300 })
  const admin = new Redis(URL)
  try {
    for (let waited = 0; !broker.isReady(); waited += 50) {
      if (waited > 10_000) throw new Error(`redis at ${URL} is not ready`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const all = drafts(EVENTS)
    const calls: EventDraft[][] = []
    for (let i = 0; i < all.length; i += BATCH) calls.push(all.slice(i, i + BATCH))
    const channels = new Set(all.map((d) => d.channel)).size
    await broker.publishBatch(calls[0].map((d) => ({ ...d, origin: undefined }))) // scripts loaded, warm
    const before = await scriptMicros(admin)
    const started = process.hrtime.bigint()
    for (const call of calls) await broker.publishBatch(call)
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6
    const redisMicros = await scriptMicros(admin) - before
    process.stdout.write(`redis publish script: ${all.length} events in calls of ${BATCH} (${channels} channels, Kafka origins)\n` +
      `  redis   ${(redisMicros / all.length).toFixed(2)} µs/event in the script (INFO commandstats)\n` +
      `  client  ${(wallMs * 1000 / all.length).toFixed(2)} µs/event wall, ${(all.length / wallMs * 1000 / 1000).toFixed(1)}k events/s, ${(calls.length / wallMs * 1000).toFixed(0)} calls/s\n`)
  } finally {
    await broker.close()
    let cursor = '0'
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await admin.del(...keys)
    } while (cursor !== '0')
    admin.disconnect()
  }
}

await main()
