import { buildApp } from '../../app.js'
import { configFrom } from '../../lib/ops/config.js'
import { publishAll } from '../../lib/ingress/publisher.js'
import { now } from '../lib/clock.js'
import { BENCH_CHANNEL, type BenchMessage, serveControl } from './control.js'

/**
 * Our gateway as it runs in production: buildApp with the memory broker and JWT auth,
 * or, with BENCH_REDIS_URL (the cluster case), the Redis broker under
 * BENCH_REDIS_KEY_PREFIX; BENCH_CONFIG (JSON) sets any other setting. Broadcasts through the broker API here (the `burst`/`steady`
 * control ops); the parent also drives it through HTTP POST /realtime/publish with a
 * service token.
 *
 * With BENCH_KAFKA_BROKERS it also consumes Kafka (the Kafka case, bench/kafka.ts) under
 * BENCH_KAFKA_TOPIC_PREFIX in the group BENCH_KAFKA_GROUP_ID. With BENCH_KAFKA_GATED the
 * broker's publishes wait until the `open` op, so the clients are connected before the
 * backlog starts to drain; once open, the broker's own methods are back in place.
 */
const secret = process.env.BENCH_JWT_SECRET
if (secret === undefined) throw new Error('BENCH_JWT_SECRET is required')

const config = configFrom({
  JWT_SECRET: secret,
  HOST: '127.0.0.1',
  PORT: 0,
  LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
  // The bench publishes far more than a service would; the HTTP limit is not what is measured.
  HTTP_RATE_LIMIT_PER_MINUTE: 100_000_000,
  // The reconnect storm (bench/storm.ts) keeps more history than the default, for its longest storms.
  ...(process.env.BENCH_HISTORY_SIZE === undefined ? {} : { HISTORY_SIZE: Number(process.env.BENCH_HISTORY_SIZE) }),
  ...(process.env.BENCH_REDIS_CLUSTER_NODES === undefined || process.env.BENCH_REDIS_CLUSTER_NODES === ''
    ? {}
    : {
        REDIS_CLUSTER_NODES: process.env.BENCH_REDIS_CLUSTER_NODES,
        REDIS_KEY_PREFIX: process.env.BENCH_REDIS_KEY_PREFIX ?? 'rtg-bench:'
      }),
  ...(process.env.BENCH_REDIS_URL === undefined
    ? {}
    : {
        REDIS_URL: process.env.BENCH_REDIS_URL,
        REDIS_KEY_PREFIX: process.env.BENCH_REDIS_KEY_PREFIX ?? 'rtg-bench:'
      }),
  ...(process.env.BENCH_KAFKA_BROKERS === undefined
    ? {}
    : {
        KAFKA_BROKERS: process.env.BENCH_KAFKA_BROKERS,
        KAFKA_TOPIC_PREFIX: process.env.BENCH_KAFKA_TOPIC_PREFIX,
        KAFKA_GROUP_ID: process.env.BENCH_KAFKA_GROUP_ID,
        LOW_STOCK_THRESHOLD: process.env.BENCH_LOW_STOCK_THRESHOLD
      }),
  // Any other setting a case needs (bench/features.ts: PRESENCE_CHANNELS, NODE_ID, …), as JSON.
  ...(JSON.parse(process.env.BENCH_CONFIG ?? '{}') as Record<string, string | number>)
})
const app = await buildApp(config)
const openGate = process.env.BENCH_KAFKA_GATED === undefined ? () => {} : gate(app.hub.broker)
await app.listen({ host: config.HOST, port: config.PORT })

/** A burst goes through publishAll, the batch publish of Kafka batches and multi-event HTTP bodies. */
function broadcast (messages: BenchMessage[]): void {
  const drafts = messages.map((m) => ({ channel: BENCH_CHANNEL, type: 'bench', payload: { seq: m.seq, sentAt: m.sentAt } }))
  publishAll(app.hub, drafts).catch((err: unknown) => { app.log.error({ err }, 'bench publish failed') })
}

/** Holds every publish (instance properties shadowing the broker's methods) until the returned function is called. */
function gate (broker: typeof app.hub.broker): () => void {
  let open: () => void = () => {}
  const opened = new Promise<void>((resolve) => { open = resolve })
  const held = ['publish', 'publishBatch'] as const
  const target = broker as unknown as Record<string, unknown>
  for (const name of held) {
    const method = target[name]
    if (typeof method !== 'function') continue
    target[name] = async (...args: unknown[]) => { await opened; return await method.apply(broker, args) }
  }
  return () => {
    for (const name of held) delete target[name]
    open()
  }
}

const address = app.server.address()
serveControl({
  broadcast,
  connections: () => app.hub.connectionCount(),
  handlers: {
    open: () => {
      openGate()
      return { openedAt: now() }
    },
    /** Shuts the app down as production does (the Kafka consumer commits and leaves its group). */
    close: async () => {
      await app.close()
      return {}
    }
  }
}, typeof address === 'object' && address !== null ? address.port : 0)
