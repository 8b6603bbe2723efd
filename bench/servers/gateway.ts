import { buildApp } from '../../app.js'
import { configFrom } from '../../lib/ops/config.js'
import { publishAll } from '../../lib/ingress/publisher.js'
import { BENCH_CHANNEL, type BenchMessage, serveControl } from './control.js'

/**
 * Our gateway as it runs in production: buildApp with the memory broker and JWT auth,
 * or, with BENCH_REDIS_URL (the cluster case), the Redis broker under
 * BENCH_REDIS_KEY_PREFIX. Broadcasts through the broker API here (the `burst`/`steady`
 * control ops); the parent also drives it through HTTP POST /realtime/publish with a
 * service token.
 */
const secret = process.env.BENCH_JWT_SECRET
if (secret === undefined) throw new Error('BENCH_JWT_SECRET is required')

const config = configFrom({
  JWT_SECRET: secret,
  HOST: '127.0.0.1',
  PORT: 0,
  LOG_LEVEL: 'warn',
  // The bench publishes far more than a service would; the HTTP limit is not what is measured.
  HTTP_RATE_LIMIT_PER_MINUTE: 100_000_000,
  ...(process.env.BENCH_REDIS_URL === undefined
    ? {}
    : {
        REDIS_URL: process.env.BENCH_REDIS_URL,
        REDIS_KEY_PREFIX: process.env.BENCH_REDIS_KEY_PREFIX ?? 'rtg-bench:'
      })
})
const app = await buildApp(config)
await app.listen({ host: config.HOST, port: config.PORT })

/** A burst goes through publishAll, the batch publish of Kafka batches and multi-event HTTP bodies. */
function broadcast (messages: BenchMessage[]): void {
  const drafts = messages.map((m) => ({ channel: BENCH_CHANNEL, type: 'bench', payload: { seq: m.seq, sentAt: m.sentAt } }))
  publishAll(app.hub.broker, drafts).catch((err: unknown) => { app.log.error({ err }, 'bench publish failed') })
}

const address = app.server.address()
serveControl({
  broadcast,
  connections: () => app.hub.connectionCount()
}, typeof address === 'object' && address !== null ? address.port : 0)
