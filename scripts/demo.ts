/**
 * npm run demo: the gateway on its embedded broker (no Redis, no Kafka) plus a shop
 * simulator, and a dashboard link with an admin token. Runs until Ctrl-C.
 */
import { buildApp } from '../app.js'
import { ConfigError, loadConfig } from '../lib/ops/config.js'
import { publishAll } from '../lib/ingress/publisher.js'
import { makeDevSecret, mintToken } from '../lib/auth/token.js'
import { ShopSimulator } from './demo-shop.js'
import { ViewerCrowd } from './demo-viewers.js'

const ADMIN_USER = 'admin'
/** The storefront's shopper: one of the simulated buyers, so some orders are theirs. */
const SHOPPER_USER = 'u-7'
/** Product channels keep their latest state for a day (the storefront's rewind: 1), the inventory channel the stock levels (the dashboard's low-stock panel), users a day of orders. */
const DEMO_HISTORY_POLICY = 'product:=20/86400,products=50/86400,inventory=200/86400,user:=100/86400'
const TOKEN_TTL_SECONDS = 12 * 3600

// The demo is the embedded default whatever the shell exports; logs stay quiet unless asked.
const env: Record<string, string | undefined> = {
  LOG_LEVEL: 'warn', HISTORY_POLICY: DEMO_HISTORY_POLICY, ...process.env, REDIS_URL: undefined, KAFKA_BROKERS: undefined
}
let config
try {
  config = loadConfig(env)
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(err.message + '\n')
  process.exit(1)
}
const secret = config.JWT_SECRET ?? makeDevSecret()
config = { ...config, JWT_SECRET: secret }

const app = await buildApp(config)
try {
  await app.listen({ port: config.PORT, host: config.HOST })
} catch (err) {
  const busy = (err as NodeJS.ErrnoException).code === 'EADDRINUSE'
  process.stderr.write(busy
    ? `Port ${config.PORT} is taken: PORT=${config.PORT + 1} npm run demo\n`
    : `Could not listen on ${config.HOST}:${config.PORT}: ${(err as Error).message}\n`)
  await app.close()
  process.exit(1)
}

const base = `http://localhost:${config.PORT}`
const serviceToken = mintToken(secret, { sub: 'demo-shop', roles: ['service'], ttlSeconds: TOKEN_TTL_SECONDS })
const adminToken = mintToken(secret, { sub: ADMIN_USER, roles: ['admin'], ttlSeconds: TOKEN_TTL_SECONDS })
const shopperToken = mintToken(secret, { sub: SHOPPER_USER, ttlSeconds: TOKEN_TTL_SECONDS })

const shop = new ShopSimulator({
  async post (route, body) {
    const res = await fetch(`http://127.0.0.1:${config.PORT}${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken}` },
      body: JSON.stringify(body)
    })
    if (!res.ok) throw new Error(`${route} answered ${res.status}: ${await res.text()}`)
  },
  async publish (drafts) {
    await publishAll(app.hub, drafts)
  },
  log: (line) => process.stderr.write(line + '\n')
}, { adminUserId: ADMIN_USER, shopperUserId: SHOPPER_USER })
shop.start()
const featured = 'p-104'
const crowd = new ViewerCrowd({
  url: `http://127.0.0.1:${config.PORT}`,
  tokenFor: (userId) => mintToken(secret, { sub: userId, ttlSeconds: TOKEN_TTL_SECONDS }),
  products: [featured, ...ShopSimulator.productIds.filter((id) => id !== featured)]
})
crowd.start()

process.stdout.write([
  '',
  '  realtime-gateway demo: embedded broker, simulated shop traffic',
  '',
  `  Dashboard   ${base}/?token=${adminToken}`,
  `  Storefront  ${base}/shop.html?product=${featured}&token=${shopperToken}`,
  `  API docs    ${base}/api/docs`,
  `  Metrics     ${base}/metrics`,
  `  Client      ${base}/client.js`,
  '',
  `  The link carries an admin token valid for ${TOKEN_TTL_SECONDS / 3600} h (the secret is in .jwt-dev-secret unless JWT_SECRET is set).`,
  '  Simulating: an order about every 1.5 s (created → paid → shipped → delivered, ~13 % cancelled),',
  `  stock falling to the low-stock threshold (${config.LOW_STOCK_THRESHOLD}) and restocked, price changes;`,
  `  4 to 14 shoppers browsing product pages (a third over SSE), most on ${featured}; the storefront's`,
  `  shopper is ${SHOPPER_USER}, who places about one order in eight. Ctrl-C to stop.`,
  '', ''
].join('\n'))

const progress = setInterval(() => {
  const c = shop.counts
  process.stdout.write(`  ${new Date().toLocaleTimeString()}  orders ${c.orders} (cancelled ${c.cancelled}, delivered ${c.delivered}) · ` +
    `stock updates ${c.stockUpdates} · restocks ${c.restocks} · price changes ${c.priceChanges}` +
    `${c.failures > 0 ? ` · failed publishes ${c.failures}` : ''} · viewers ${crowd.size} · connections ${app.hub.connectionCount()}\n`)
}, 30_000)

let stopping = false
async function stop (signal: string): Promise<void> {
  if (stopping) process.exit(1) // a second Ctrl-C: leave at once
  stopping = true
  process.stdout.write(`\n  ${signal}: stopping the simulator and closing connections (1012)…\n`)
  clearInterval(progress)
  shop.stop()
  crowd.stop()
  await shop.settled()
  await app.close()
  process.exit(0)
}
process.on('SIGINT', () => { void stop('SIGINT') })
process.on('SIGTERM', () => { void stop('SIGTERM') })
