import { generateKeyPairSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ConfigError, corsOrigins, historyPolicy, kafkaBrokerList, loadConfig, trustProxy } from '../../lib/ops/config.js'
import { mintToken } from '../../lib/auth/token.js'
import { freePort } from '../support/ports.js'
import { buildServer, spawnServer, within } from '../support/server-process.js'

/**
 * How long a real server may take to stop (or to exit after SIGTERM): it loads every module
 * first, which took 7–16 s on a loaded 2-core CI machine (15 s was too tight there).
 */
const EXIT_WITHIN_MS = 45_000

const RSA = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
const EC = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
const ED25519 = generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })

t.test('defaults are those of docs/protocol.md, Limits', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    PORT: 3000,
    HOST: '0.0.0.0',
    ALLOW_ANONYMOUS: false,
    CORS_ORIGIN: '*',
    KAFKA_GROUP_ID: 'realtime-gateway',
    LOG_LEVEL: 'info',
    HISTORY_SIZE: 100,
    HISTORY_TTL_SECONDS: 300,
    LOW_STOCK_THRESHOLD: 5,
    BODY_LIMIT_BYTES: 1024 * 1024,
    WS_MAX_PAYLOAD_BYTES: 64 * 1024,
    SEND_BUFFER_LIMIT_BYTES: 1024 * 1024,
    MAX_CHANNELS_PER_CONNECTION: 128
  })
  t.equal(config.JWT_SECRET, undefined)
  t.equal(config.JWT_PUBLIC_KEY, undefined)
  t.equal(config.REDIS_URL, undefined, 'no REDIS_URL: in-process broker')
  t.equal(config.KAFKA_BROKERS, undefined, 'no KAFKA_BROKERS: no consumer')
  t.ok(config.WS_RATE_LIMIT_PER_SECOND >= 10, 'a generous inbound frame rate')
  t.ok(config.HTTP_RATE_LIMIT_PER_MINUTE >= 1000, 'thousands of publishes a minute')
  t.equal(corsOrigins(config), '*')
})

t.test('values are parsed from strings', async (t) => {
  const config = loadConfig({
    PORT: '8080',
    ALLOW_ANONYMOUS: 'true',
    HISTORY_SIZE: '7',
    CORS_ORIGIN: 'https://a.example, https://b.example',
    KAFKA_BROKERS: 'k1:9092, k2:9093',
    REDIS_URL: 'redis://127.0.0.1:6379/2',
    JWT_SECRET: 's'
  })
  t.equal(config.PORT, 8080)
  t.equal(config.ALLOW_ANONYMOUS, true)
  t.equal(config.HISTORY_SIZE, 7)
  t.same(corsOrigins(config), ['https://a.example', 'https://b.example'])
  t.same(corsOrigins(loadConfig({ CORS_ORIGIN: 'https://Shop.example/, https://admin.example:443,https://shop.example' })), ['https://shop.example', 'https://admin.example'],
    'written as a browser sends its Origin (no trailing slash, lower case, no default port), once each')
  t.same(kafkaBrokerList(config), ['k1:9092', 'k2:9093'])
  t.equal(loadConfig({ PORT: '' }).PORT, 3000, 'an empty value means unset')
  t.equal(loadConfig({ KAFKA_TOPIC_PREFIX: 'p'.repeat(229), KAFKA_DLQ_TOPIC: 'dead-letters_1' }).KAFKA_DLQ_TOPIC, 'dead-letters_1',
    'the longest prefix whose topic names Kafka accepts')
})

t.test('a bad REDIS_URL is named, never repeated: it may hold a password', async (t) => {
  for (const url of ['redis://:s3cret@127.0.0.1:6379/abc', 'http://:s3cret@127.0.0.1:6379', 'redis//:s3cret@127.0.0.1:6379', 'redis://:s3cret@127.0.0.1:6379?db=x']) {
    const err = (() => { try { loadConfig({ REDIS_URL: url }) } catch (e) { return e as Error } })()
    t.ok(err instanceof ConfigError && /REDIS_URL/.test(err.message), `${url.replace('s3cret', '…')}: named`)
    t.notMatch(err?.message ?? '', /s3cret/, 'the password is not in the message')
  }
})

t.test('an invalid value is a ConfigError whose one-line message names the variable', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ REDIS_URL: 'not-a-url' }, 'REDIS_URL'],
    [{ REDIS_URL: 'http://127.0.0.1:6379' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://127.0.0.1:6379/abc' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://127.0.0.1:6379/1/2' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://127.0.0.1:6379?db=x' }, 'REDIS_URL'],
    [{ KAFKA_BROKERS: 'bad' }, 'KAFKA_BROKERS'],
    [{ KAFKA_BROKERS: 'k1:9092,,nope' }, 'KAFKA_BROKERS'],
    [{ KAFKA_BROKERS: ',' }, 'KAFKA_BROKERS'],
    [{ KAFKA_BROKERS: ' , ' }, 'KAFKA_BROKERS'],
    [{ KAFKA_BROKERS: '127.0.0.1:99999' }, 'KAFKA_BROKERS'],
    [{ KAFKA_BROKERS: 'k1:9092,127.0.0.1:0' }, 'KAFKA_BROKERS'],
    [{ KAFKA_DLQ_TOPIC: 'bad dlq!' }, 'KAFKA_DLQ_TOPIC'],
    [{ KAFKA_DLQ_TOPIC: '..' }, 'KAFKA_DLQ_TOPIC'],
    [{ KAFKA_DLQ_TOPIC: 'd'.repeat(250) }, 'KAFKA_DLQ_TOPIC'],
    [{ KAFKA_TOPIC_PREFIX: 'bad prefix/' }, 'KAFKA_TOPIC_PREFIX'],
    [{ KAFKA_TOPIC_PREFIX: 'p'.repeat(230) }, 'KAFKA_TOPIC_PREFIX'],
    [{ REDIS_CLUSTER_NODES: ',' }, 'REDIS_CLUSTER_NODES'],
    [{ HISTORY_SIZE: '-1' }, 'HISTORY_SIZE'],
    [{ HISTORY_TTL_SECONDS: 'soon' }, 'HISTORY_TTL_SECONDS'],
    [{ ALLOW_ANONYMOUS: 'maybe' }, 'ALLOW_ANONYMOUS'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ LOW_STOCK_THRESHOLD: '2.5' }, 'LOW_STOCK_THRESHOLD'],
    [{ JWT_PUBLIC_KEY: 'not a pem' }, 'JWT_PUBLIC_KEY'],
    // Audit: these three crashed start-up with the verifier's stack trace.
    [{ JWT_PUBLIC_KEY: '-----BEGIN' }, 'JWT_PUBLIC_KEY'],
    [{ JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----' }, 'JWT_PUBLIC_KEY'],
    [{ JWT_PUBLIC_KEY: RSA.privateKey }, 'JWT_PUBLIC_KEY'],
    [{ JWT_PUBLIC_KEY: ED25519.publicKey }, 'JWT_PUBLIC_KEY'],
    // Audit: these crashed start-up in Fastify's proxy-address parser.
    [{ TRUST_PROXY: '10.0.0.0/99' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: 'abc' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: '999.999.1.1' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: '::1/200' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: ':::' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: '10.0.0.0/8/8' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: '0.0.0.0/0' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: '::/0' }, 'TRUST_PROXY'],
    // Audit: Node runs a timer over 2^31-1 ms after 1 ms (every WebSocket dropped within a second).
    [{ HEARTBEAT_MS: '3000000000' }, 'HEARTBEAT_MS'],
    [{ SSE_HEARTBEAT_MS: '3000000000' }, 'SSE_HEARTBEAT_MS'],
    [{ SHUTDOWN_TIMEOUT_MS: '2147483648' }, 'SHUTDOWN_TIMEOUT_MS'],
    [{ REQUEST_TIMEOUT_MS: '3000000000' }, 'REQUEST_TIMEOUT_MS'],
    // Audit: read as JavaScript numbers, these were ports 4333 and 1000.
    [{ PORT: '0x10ED' }, 'PORT'],
    [{ PORT: '1e3' }, 'PORT'],
    [{ HISTORY_SIZE: '0b11' }, 'HISTORY_SIZE'],
    [{ REDIS_URL: 'redis://' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://127.0.0.1:0' }, 'REDIS_URL'],
    [{ NODE_ENV: 'production' }, 'JWT_SECRET'],
    [{ HISTORY_POLICY: 'user:1000/86400' }, 'HISTORY_POLICY'],
    [{ HISTORY_POLICY: 'user:=1000' }, 'HISTORY_POLICY'],
    [{ HISTORY_POLICY: 'user:=1000/0' }, 'HISTORY_POLICY'],
    [{ HISTORY_POLICY: 'user:=200000/60' }, 'HISTORY_POLICY'],
    [{ HISTORY_POLICY: 'us er:=10/60' }, 'HISTORY_POLICY'],
    [{ HISTORY_POLICY: 'user:=1/60,user:=2/60' }, 'HISTORY_POLICY'],
    [{ EVENT_MAX_BYTES: '100000', PUBLISH_MAX_BYTES: '50000' }, 'PUBLISH_MAX_BYTES'],
    // A burst set below one request's rightful ask refuses that request for ever (session 32).
    [{ MAX_CHANNELS_PER_CONNECTION: '7000', NEW_CHANNELS_BURST: '6400' }, 'NEW_CHANNELS_BURST'],
    [{ MAX_CHANNELS_PER_CONNECTION: '20000', WS_SUBSCRIBES_BURST: '12800' }, 'WS_SUBSCRIBES_BURST'],
    [{ WS_SUBSCRIBES_BURST: '4', MAX_CHANNELS_PER_CONNECTION: '5' }, 'WS_SUBSCRIBES_BURST'],
    [{ NEW_CHANNELS_BURST: '127' }, 'NEW_CHANNELS_BURST'],
    [{ WS_INBOUND_BYTES_BURST: '65535' }, 'WS_INBOUND_BYTES_BURST'],
    [{ WS_MAX_PAYLOAD_BYTES: '8388608', WS_INBOUND_BYTES_BURST: '4194304' }, 'WS_INBOUND_BYTES_BURST'],
    [{ WS_RATE_LIMIT_PER_SECOND: '200', WS_RATE_LIMIT_BURST: '100' }, 'WS_RATE_LIMIT_BURST'],
    [{ REQUEST_TIMEOUT_MS: '10' }, 'REQUEST_TIMEOUT_MS'],
    [{ WS_ALLOWED_ORIGINS: 'shop.example' }, 'WS_ALLOWED_ORIGINS'],
    [{ WS_ALLOWED_ORIGINS: 'https://shop.example,file:///x' }, 'WS_ALLOWED_ORIGINS'],
    [{ CORS_ORIGIN: 'shop.example' }, 'CORS_ORIGIN'],
    [{ CORS_ORIGIN: 'https://shop.example,file:///x' }, 'CORS_ORIGIN']
  ]
  for (const [env, variable] of cases) {
    let error: unknown
    try { loadConfig(env) } catch (err) { error = err }
    t.ok(error instanceof ConfigError, `${JSON.stringify(env)} is refused`)
    if (!(error instanceof ConfigError)) continue
    t.equal(error.variable, variable, `${JSON.stringify(env)} names ${variable}`)
    t.match(error.message, variable)
    t.notMatch(error.message, /\n/, 'one line')
  }
  t.doesNotThrow(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'a-real-secret' }), 'production with a secret starts')
  t.doesNotThrow(() => loadConfig({ MAX_CHANNELS_PER_CONNECTION: '6400', WS_INBOUND_BYTES_BURST: '65536' }), 'bursts exactly one request\'s ask start')
})

t.test('a default floor follows a raised limit; one set explicitly stays as set', async (t) => {
  const raised = loadConfig({
    MAX_CHANNELS_PER_CONNECTION: '20000',
    WS_MAX_PAYLOAD_BYTES: '8388608',
    WS_RATE_LIMIT_PER_SECOND: '500',
    EVENT_MAX_BYTES: '5242880'
  })
  t.equal(raised.WS_SUBSCRIBES_BURST, 20_000, 'the subscribe burst follows the channel limit')
  t.equal(raised.NEW_CHANNELS_BURST, 20_000, 'the new-channel burst follows the channel limit')
  t.equal(raised.WS_INBOUND_BYTES_BURST, 8_388_608, 'the inbound bytes burst follows the largest frame')
  t.equal(raised.WS_RATE_LIMIT_BURST, 500, 'the frame burst follows the frame rate')
  t.equal(raised.PUBLISH_MAX_BYTES, 5_242_880, 'a publish holds one event of the largest size')

  const defaults = loadConfig({})
  t.same(
    [defaults.WS_SUBSCRIBES_BURST, defaults.NEW_CHANNELS_BURST, defaults.WS_INBOUND_BYTES_BURST, defaults.WS_RATE_LIMIT_BURST, defaults.PUBLISH_MAX_BYTES],
    [12_800, 6400, 4_194_304, 100, 4_194_304],
    'limits below the defaults leave them as they are'
  )
  const chosen = loadConfig({ MAX_CHANNELS_PER_CONNECTION: '20000', WS_SUBSCRIBES_BURST: '30000' })
  t.equal(chosen.WS_SUBSCRIBES_BURST, 30_000, 'a burst set above the limit is kept')
  t.equal(chosen.NEW_CHANNELS_BURST, 20_000, 'the other, defaulted, still follows')
})

t.test('JWT_PUBLIC_KEY: RSA and EC public keys are taken', async (t) => {
  t.equal(loadConfig({ JWT_PUBLIC_KEY: RSA.publicKey }).JWT_PUBLIC_KEY, RSA.publicKey)
  t.equal(loadConfig({ JWT_PUBLIC_KEY: EC.publicKey }).JWT_PUBLIC_KEY, EC.publicKey)
  t.equal(loadConfig({ PORT: ' 4000 ' }).PORT, 4000, 'decimal digits with spaces around, as .env files leave them')
  t.equal(loadConfig({ HEARTBEAT_MS: String(2 ** 31 - 1) }).HEARTBEAT_MS, 2 ** 31 - 1, 'the longest timer Node runs')
})

t.test('HISTORY_POLICY: the longest matching prefix wins; the defaults elsewhere', async (t) => {
  const policy = historyPolicy(loadConfig({ HISTORY_SIZE: '10', HISTORY_TTL_SECONDS: '60', HISTORY_POLICY: ' user:=1000/86400 , user:vip=5/30,product:=1/86400' }))
  t.same(policy.of('user:42'), { prefix: 'user:', size: 1000, ttlSeconds: 86400 })
  t.same(policy.of('user:vip-1'), { prefix: 'user:vip', size: 5, ttlSeconds: 30 })
  t.same(policy.of('product:7'), { prefix: 'product:', size: 1, ttlSeconds: 86400 })
  t.same(policy.of('room:x'), { size: 10, ttlSeconds: 60 })
  t.equal(policy.maxSize, 1000)
})

t.test('TRUST_PROXY: off by default, true, or proxy addresses', async (t) => {
  t.equal(trustProxy(loadConfig({})), false)
  t.equal(trustProxy(loadConfig({ TRUST_PROXY: 'true' })), true)
  t.same(trustProxy(loadConfig({ TRUST_PROXY: 'uniquelocal,loopback' })), ['uniquelocal', 'loopback'])
  t.same(trustProxy(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' })), ['10.0.0.0/8', '127.0.0.1'])
  t.throws(() => loadConfig({ TRUST_PROXY: 'nginx please' }), { name: 'ConfigError', variable: 'TRUST_PROXY' })
})

t.test('the real server', async (t) => {
  const dir = await buildServer()

  /** Start-up stops: exit code 1 and one stderr line, naming the variable. */
  async function stopsNaming (t: Test, env: Record<string, string>, variable: string): Promise<void> {
    const server = spawnServer(t, dir, { JWT_SECRET: 's', ...env })
    t.equal(await within(EXIT_WITHIN_MS, server.exited, 'exit'), 1)
    const lines = server.stderr().split('\n').filter((l) => l !== '')
    t.equal(lines.length, 1, `one line: ${server.stderr()}`)
    t.match(lines[0], new RegExp(variable))
  }

  t.test('PORT=abc: exit code 1 and one stderr line naming PORT', async (t) => {
    await stopsNaming(t, { PORT: 'abc' }, 'PORT')
  })

  t.test('REDIS_URL naming no database number: exit code 1 and one stderr line naming REDIS_URL, not a crash in the Redis client', async (t) => {
    await stopsNaming(t, { PORT: String(await freePort()), REDIS_URL: 'redis://127.0.0.1:6379/abc' }, 'REDIS_URL')
  })

  t.test('a HOST it cannot listen on: exit code 1 and one stderr line naming HOST, as any invalid value', async (t) => {
    for (const host of ['999.1.1.1', 'not a host', '203.0.113.9']) {
      await stopsNaming(t, { PORT: String(await freePort()), HOST: host }, 'Invalid configuration: HOST')
    }
  })

  t.test('production without a secret: exit code 1 naming JWT_SECRET', async (t) => {
    const server = spawnServer(t, dir, { NODE_ENV: 'production', PORT: String(await freePort()) })
    t.equal(await within(EXIT_WITHIN_MS, server.exited, 'exit'), 1)
    t.match(server.stderr(), /JWT_SECRET/)
    t.equal(server.stderr().trim().split('\n').length, 1)
  })

  t.test('no secret outside production: it makes one, says how to mint a token, never logs it', async (t) => {
    const port = await freePort()
    const server = spawnServer(t, dir, { PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' })
    await server.waitForOutput('npm run token')
    await server.waitForOutput('Server listening')
    const secret = readFileSync(join(server.cwd, '.jwt-dev-secret'), 'utf8').trim()
    t.ok(secret.length >= 32, 'the secret was saved in the server cwd for npm run token')
    t.notOk(server.stdout().includes(secret), 'the secret is not in the log')
    t.notOk(server.stderr().includes(secret))

    // The saved secret is the one the server verifies with.
    const good = mintToken(secret, { sub: 'svc', roles: ['service'], ttlSeconds: 60 })
    const res = await fetch(`http://127.0.0.1:${port}/realtime/stats`, { headers: { authorization: `Bearer ${good}` } })
    t.equal(res.status, 200)
    const other = mintToken('another-secret', { sub: 'svc', roles: ['service'], ttlSeconds: 60 })
    const refused = await fetch(`http://127.0.0.1:${port}/realtime/stats`, { headers: { authorization: `Bearer ${other}` } })
    t.equal(refused.status, 401)
    t.notOk(server.stdout().includes(good), 'tokens are not logged either')

    server.child.kill('SIGTERM')
    t.equal(await within(EXIT_WITHIN_MS, server.exited, 'exit after SIGTERM'), 0)
  })
})
