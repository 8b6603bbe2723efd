import { createPublicKey, type KeyObject } from 'node:crypto'
import { isIP } from 'node:net'
import envSchema from 'env-schema'
import { Type, type Static } from '@sinclair/typebox'
import { CHANNEL_ALPHABET } from '../auth/channels.js'
import { HistoryPolicy, parseHistoryPolicy } from '../broker/history-policy.js'

/**
 * Every environment variable the gateway reads, in one schema. Values arrive as
 * strings and are coerced once here; the rest of the code sees typed values only.
 * Add a variable here and to the README's configuration table, nowhere else.
 */
const int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  Type.Integer({ default: def, minimum: min, maximum: max })
/**
 * A delay for a timer: Node's timers take at most 2^31−1 ms (about 24.8 days) and run one
 * longer after 1 ms instead (a HEARTBEAT_MS of 3e9 dropped every WebSocket within a second).
 */
const TIMER_MAX_MS = 2 ** 31 - 1
const ms = (def: number, min: number) => int(def, min, TIMER_MAX_MS)

export const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: int(3000, 0, 65535),
  HOST: Type.String({ default: '0.0.0.0', minLength: 1 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' }
  ),
  NODE_ID: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),

  JWT_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  JWT_PUBLIC_KEY: Type.Optional(Type.String({ minLength: 1 })),
  JWT_ISSUER: Type.Optional(Type.String({ minLength: 1 })),
  JWT_AUDIENCE: Type.Optional(Type.String({ minLength: 1 })),
  ALLOW_ANONYMOUS: Type.Boolean({ default: false }),
  CORS_ORIGIN: Type.String({ default: '*', minLength: 1 }),
  WS_ALLOWED_ORIGINS: Type.String({ default: '*', minLength: 1 }),
  TRUST_PROXY: Type.String({ default: 'false', minLength: 1 }),

  REDIS_URL: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_KEY_PREFIX: Type.String({ default: 'rtg:' }),
  KAFKA_BROKERS: Type.Optional(Type.String({ minLength: 1 })),
  KAFKA_GROUP_ID: Type.String({ default: 'realtime-gateway', minLength: 1 }),
  KAFKA_CLIENT_ID: Type.String({ default: 'realtime-gateway', minLength: 1 }),
  KAFKA_TOPIC_PREFIX: Type.String({ default: '' }),
  KAFKA_DLQ_TOPIC: Type.String({ default: 'realtime.dlq', minLength: 1 }),

  HISTORY_SIZE: int(100, 0, 100_000),
  HISTORY_TTL_SECONDS: int(300, 1, 86_400 * 30),
  HISTORY_POLICY: Type.Optional(Type.String({ minLength: 1 })),
  HISTORY_CACHE_BYTES: int(32 * 1024 * 1024, 0, 8 * 1024 * 1024 * 1024),
  LOW_STOCK_THRESHOLD: int(5, 0),
  IDEMPOTENCY_TTL_SECONDS: int(300, 1, 86_400 * 7),
  REVOCATION_TTL_SECONDS: int(86_400, 1, 86_400 * 365),
  PRESENCE_CHANNELS: Type.String({ default: 'product:,event:,room:' }),
  PRESENCE_INTERVAL_MS: int(2000, 100, 600_000),

  BODY_LIMIT_BYTES: int(1024 * 1024, 1024),
  EVENT_MAX_BYTES: int(64 * 1024, 256),
  PUBLISH_MAX_BYTES: int(4 * 1024 * 1024, 1024),
  REQUEST_TIMEOUT_MS: ms(30_000, 1000),
  // A request line and headers: 128 channels of 200 characters in an SSE URL, and a resume
  // cursor naming them all again, come to some 56 KiB (docs/operations.md).
  MAX_HEADER_BYTES: int(64 * 1024, 16 * 1024, 1024 * 1024),
  WS_MAX_PAYLOAD_BYTES: int(64 * 1024, 256),
  SEND_BUFFER_LIMIT_BYTES: int(1024 * 1024, 1024),
  MAX_CHANNELS_PER_CONNECTION: int(128, 1),
  WS_RATE_LIMIT_PER_SECOND: int(50, 1),
  WS_RATE_LIMIT_BURST: int(100, 1),
  WS_RATE_LIMIT_STRIKES: int(20, 1),
  // Ten connections' worth of channels a second, bursts of every connection's 128 at once:
  // each fresh channel costs 59–287 µs of CPU (lib/transport/user-budget.ts).
  WS_SUBSCRIBES_PER_SECOND: int(1280, 1),
  WS_SUBSCRIBES_BURST: int(12_800, 1),
  // Across every user: a few users each within their own budget stalled an instance for
  // seconds (lib/transport/user-budget.ts, "New channels").
  NEW_CHANNELS_PER_SECOND: int(2560, 1),
  NEW_CHANNELS_BURST: int(6400, 1),
  WS_INBOUND_BYTES_PER_SECOND: int(1024 * 1024, 1),
  WS_INBOUND_BYTES_BURST: int(4 * 1024 * 1024, 1),
  HISTORY_READ_BYTES_PER_SECOND: int(8 * 1024 * 1024, 1),
  HISTORY_READ_BYTES_BURST: int(64 * 1024 * 1024, 1),
  // Across every user: each within its own budget, fifteen users had an instance take up to
  // 45 % of Redis's core in history reads (lib/transport/history-read-budget.ts).
  INSTANCE_HISTORY_READ_BYTES_PER_SECOND: int(64 * 1024 * 1024, 1),
  INSTANCE_HISTORY_READ_BYTES_BURST: int(256 * 1024 * 1024, 1),
  HTTP_RATE_LIMIT_PER_MINUTE: int(10_000, 1),
  MAX_CONNECTIONS: int(20_000, 1),
  MAX_CONNECTIONS_PER_USER: int(100, 1),
  HEARTBEAT_MS: ms(25_000, 100),
  SSE_HEARTBEAT_MS: ms(15_000, 100),
  SHUTDOWN_TIMEOUT_MS: ms(10_000, 100)
})

export type Config = Static<typeof EnvSchema>

/** Thrown for any invalid variable; the message is one line that names it. */
export class ConfigError extends Error {
  constructor (readonly variable: string, detail: string) {
    super(`Invalid configuration: ${variable} ${detail}`)
    this.name = 'ConfigError'
  }
}

interface AjvLikeError { instancePath?: string, message?: string, params?: Record<string, unknown> }

/** Parses and validates the environment. Throws ConfigError naming the first bad variable. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset" for optional variables, as a shell `VAR=` suggests.
  const data: Record<string, string> = {}
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const value = env[key]
    if (value === undefined || value === '') continue
    // The schema's coercion reads numbers as JavaScript does: `0x10ED` and `1e3` would be ports.
    if ((schema as { type?: string }).type === 'integer' && !/^\s*[+-]?\d+\s*$/.test(value)) {
      throw new ConfigError(key, `must be an integer in decimal digits (got ${JSON.stringify(value)})`)
    }
    data[key] = value
  }
  let config: Config
  try {
    config = envSchema<Config>({ schema: EnvSchema, data, env: false })
  } catch (err) {
    const first = ((err as { errors?: AjvLikeError[] }).errors ?? [])[0]
    const variable = first?.instancePath?.replace(/^\//, '') ||
      String(first?.params?.missingProperty ?? 'environment')
    throw new ConfigError(variable, `${first?.message ?? (err as Error).message} (got ${JSON.stringify(data[variable])})`)
  }
  checkSemantics(config, new Set(Object.keys(data)))
  return config
}

/** The seeds of REDIS_CLUSTER_NODES (`host:port`, comma-separated); throws naming the variable. */
export function redisClusterNodes (config: Pick<Config, 'REDIS_CLUSTER_NODES'>): Array<{ host: string, port: number }> {
  const seeds = listOf(config.REDIS_CLUSTER_NODES ?? '')
  const nodes = seeds.map((seed) => {
    const match = /^([A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/.exec(seed)
    const port = Number(match?.[2])
    if (match === null || port < 1 || port > 65535) return undefined
    return { host: match[1].replace(/^\[|\]$/g, ''), port }
  })
  if (nodes.length === 0 || nodes.some((n) => n === undefined)) {
    throw new ConfigError('REDIS_CLUSTER_NODES', `must be a comma-separated list of host:port (got ${JSON.stringify(config.REDIS_CLUSTER_NODES)})`)
  }
  return nodes as Array<{ host: string, port: number }>
}

function checkSemantics (config: Config, explicitlySet: ReadonlySet<string>): void {
  if (config.REDIS_URL !== undefined) {
    let url: URL
    // The URL itself is never repeated in these messages: it may hold a password.
    try { url = new URL(config.REDIS_URL) } catch { throw new ConfigError('REDIS_URL', 'is not a valid URL (expected redis://[user:password@]host:port[/db])') }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
      throw new ConfigError('REDIS_URL', `must start with redis:// or rediss:// (got ${JSON.stringify(`${url.protocol}//`)})`)
    }
    // The path (or ?db=) is the database number: ioredis SELECTs whatever it says, and a
    // SELECT of `abc` crashes the process with a Redis reply error instead of naming the variable.
    // `redis://` alone would reach localhost:6379 by the client's defaults, and a port 0 nothing.
    if (url.hostname === '') throw new ConfigError('REDIS_URL', 'names no host (expected redis://[user:password@]host:port[/db])')
    if (url.port === '0') throw new ConfigError('REDIS_URL', 'must name a port from 1 to 65535')
    const db = url.pathname.replace(/^\//, '')
    const dbParam = url.searchParams.get('db')
    if (!/^\d{0,9}$/.test(db) || (dbParam !== null && !/^\d{1,9}$/.test(dbParam))) {
      throw new ConfigError('REDIS_URL', 'must select the database by its number, as in redis://host:6379/2')
    }
  }
  if (config.REDIS_CLUSTER_NODES !== undefined) {
    if (config.REDIS_URL !== undefined) throw new ConfigError('REDIS_CLUSTER_NODES', 'is set together with REDIS_URL: set one of them')
    redisClusterNodes(config)
    if (/[{}]/.test(config.REDIS_KEY_PREFIX)) {
      throw new ConfigError('REDIS_KEY_PREFIX', `must not contain { or } with REDIS_CLUSTER_NODES (keys carry the channel as their hash tag; got ${JSON.stringify(config.REDIS_KEY_PREFIX)})`)
    }
  }
  if (config.KAFKA_BROKERS !== undefined) {
    const brokers = kafkaBrokerList(config)
    // `,` alone names no broker: the consumer would retry an empty list for ever.
    for (const broker of brokers.length === 0 ? [''] : brokers) {
      const port = Number(/^[A-Za-z0-9.\-_[\]:]+:(\d{1,5})$/.exec(broker)?.[1])
      if (!(port >= 1 && port <= 65535)) {
        throw new ConfigError('KAFKA_BROKERS', `must be a comma-separated list of host:port, ports 1 to 65535 (got ${JSON.stringify(config.KAFKA_BROKERS)})`)
      }
    }
  }
  // Kafka refuses other topic names, and the consumer would then retry for ever: at start, a
  // group never ready; at the first poison message, a partition stalled behind its DLQ send.
  // The longest name it consumes is the prefix and `notification.created`.
  if (!KAFKA_TOPIC.test(`${config.KAFKA_TOPIC_PREFIX}notification.created`)) {
    throw new ConfigError('KAFKA_TOPIC_PREFIX', `must be letters, digits, '.', '_' or '-', at most ${249 - 'notification.created'.length} of them (got ${JSON.stringify(config.KAFKA_TOPIC_PREFIX)})`)
  }
  const dlqTopic = `${config.KAFKA_TOPIC_PREFIX}${config.KAFKA_DLQ_TOPIC}`
  if (!KAFKA_TOPIC.test(dlqTopic) || dlqTopic === '.' || dlqTopic === '..') {
    throw new ConfigError('KAFKA_DLQ_TOPIC', `must be a Kafka topic name: letters, digits, '.', '_' or '-', at most 249 with KAFKA_TOPIC_PREFIX (got ${JSON.stringify(config.KAFKA_DLQ_TOPIC)})`)
  }
  if (config.JWT_PUBLIC_KEY !== undefined) checkPublicKey(config.JWT_PUBLIC_KEY)
  if (config.NODE_ENV === 'production' && config.JWT_SECRET === undefined && config.JWT_PUBLIC_KEY === undefined) {
    throw new ConfigError('JWT_SECRET', 'is required when NODE_ENV=production (or set JWT_PUBLIC_KEY)')
  }
  const proxies = trustProxy(config)
  if (Array.isArray(proxies) && !proxies.every((a) => PROXY_NAMES.has(a) || isAddressOrRange(a))) {
    throw new ConfigError('TRUST_PROXY', `must be true, false, or comma-separated proxy addresses, CIDRs (/1 or longer; every address is true), loopback, linklocal or uniquelocal (got ${JSON.stringify(config.TRUST_PROXY)})`)
  }
  allowedOrigins(config)
  corsOrigins(config)
  if (!listOf(config.PRESENCE_CHANNELS).every((p) => CHANNEL_PREFIX.test(p))) {
    throw new ConfigError('PRESENCE_CHANNELS', `must be comma-separated channel name prefixes (got ${JSON.stringify(config.PRESENCE_CHANNELS)})`)
  }
  if (config.HISTORY_POLICY !== undefined) {
    try {
      parseHistoryPolicy(config.HISTORY_POLICY)
    } catch (err) {
      throw new ConfigError('HISTORY_POLICY', `${(err as Error).message} (e.g. user:=1000/86400,product:=1/86400)`)
    }
  }
  for (const { variable, atLeast, because } of FLOORS) {
    const floor = config[atLeast]
    if (config[variable] >= floor) continue
    // A default meant for the default limits follows a raised one; a value the operator
    // chose is theirs, and a wrong one stops start-up naming it.
    if (!explicitlySet.has(variable)) config[variable] = floor
    else throw new ConfigError(variable, `must be at least ${atLeast} (${floor})${because === '' ? '' : `: ${because}`}`)
  }
}

/**
 * Variables that may never be below another. A budget's burst is the most one request can
 * ever take: below what one request may rightly ask (a connection's every channel named at
 * once, a frame of the largest size), that request is refused for ever, whatever the clock,
 * and the client retries in vain. Likewise a publish must hold one event of the largest size.
 */
const FLOORS: ReadonlyArray<{ variable: IntegerVariable, atLeast: IntegerVariable, because: string }> = [
  { variable: 'PUBLISH_MAX_BYTES', atLeast: 'EVENT_MAX_BYTES', because: '' },
  { variable: 'WS_RATE_LIMIT_BURST', atLeast: 'WS_RATE_LIMIT_PER_SECOND', because: '' },
  { variable: 'WS_SUBSCRIBES_BURST', atLeast: 'MAX_CHANNELS_PER_CONNECTION', because: 'a subscribe naming that many channels would never pass' },
  { variable: 'NEW_CHANNELS_BURST', atLeast: 'MAX_CHANNELS_PER_CONNECTION', because: 'a subscribe naming that many channels would never pass' },
  { variable: 'WS_INBOUND_BYTES_BURST', atLeast: 'WS_MAX_PAYLOAD_BYTES', because: 'a frame that large would never pass' }
]

type IntegerVariable = { [K in keyof Config]-?: Config[K] extends number ? K : never }[keyof Config]

/**
 * JWT_PUBLIC_KEY must be what the token verifier can use: a PEM public key, RSA or EC (the
 * RS*, PS* and ES* algorithms). Anything else crashed start-up with the verifier's stack
 * trace. The key itself is never repeated: only its kind.
 */
function checkPublicKey (pem: string): void {
  if (/PRIVATE KEY/.test(pem)) throw new ConfigError('JWT_PUBLIC_KEY', 'is a private key: give its public key (the gateway only verifies tokens)')
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch {
    throw new ConfigError('JWT_PUBLIC_KEY', 'is not a PEM public key (-----BEGIN PUBLIC KEY----- … -----END PUBLIC KEY-----)')
  }
  if (!['rsa', 'rsa-pss', 'ec'].includes(key.asymmetricKeyType ?? '')) {
    throw new ConfigError('JWT_PUBLIC_KEY', `must be an RSA or EC public key (got ${key.asymmetricKeyType ?? 'another kind'})`)
  }
}

/** A TRUST_PROXY entry that is an IP address, or a range of them in CIDR notation. */
function isAddressOrRange (entry: string): boolean {
  const [address, bits, ...rest] = entry.split('/')
  const family = isIP(address)
  if (family === 0 || rest.length > 0) return false
  // A /0 range is every address, which the proxy-address parser refuses: that is TRUST_PROXY=true.
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) >= 1 && Number(bits) <= (family === 4 ? 32 : 128))
}

/** Comma-separated values (JWT_ISSUER, JWT_AUDIENCE …), trimmed, empty ones dropped. */
export const listOf = (value: string | undefined): string[] =>
  (value ?? '').split(',').map((v) => v.trim()).filter((v) => v !== '')

export function kafkaBrokerList (config: Pick<Config, 'KAFKA_BROKERS'>): string[] {
  return (config.KAFKA_BROKERS ?? '').split(',').map((b) => b.trim()).filter((b) => b !== '')
}

/** A topic name Kafka accepts. */
const KAFKA_TOPIC = /^[A-Za-z0-9._-]{1,249}$/

/** A PRESENCE_CHANNELS entry: the start of a channel name (docs/protocol.md, Channels). */
const CHANNEL_PREFIX = new RegExp(`^[${CHANNEL_ALPHABET}]{1,200}$`)

/**
 * Fastify's `trustProxy` from TRUST_PROXY: `false`, `true` (trust every hop), or a
 * comma-separated list of proxy addresses, CIDRs or the names `loopback`, `linklocal`,
 * `uniquelocal` (private networks, as in docker-compose). Behind a proxy this is what
 * makes `request.ip` the client's. (Fastify ignores hop counts: it cannot check the peer.)
 */
const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

export function trustProxy (config: Pick<Config, 'TRUST_PROXY'>): boolean | string[] {
  const value = config.TRUST_PROXY.trim()
  if (value === 'false') return false
  if (value === 'true') return true
  return value.split(',').map((a) => a.trim()).filter((a) => a !== '')
}

/** The history each channel keeps: HISTORY_POLICY over the HISTORY_SIZE/HISTORY_TTL_SECONDS defaults. */
export function historyPolicy (config: Pick<Config, 'HISTORY_SIZE' | 'HISTORY_TTL_SECONDS' | 'HISTORY_POLICY'>): HistoryPolicy {
  return new HistoryPolicy({ size: config.HISTORY_SIZE, ttlSeconds: config.HISTORY_TTL_SECONDS }, parseHistoryPolicy(config.HISTORY_POLICY ?? ''))
}

/** CORS_ORIGIN's origins, written as browsers send them (see originOf); '*' for every origin. */
export function corsOrigins (config: Pick<Config, 'CORS_ORIGIN'>): '*' | string[] {
  const entries = listOf(config.CORS_ORIGIN)
  return entries.includes('*') ? '*' : [...new Set(entries.map((entry) => originOf(entry, 'CORS_ORIGIN')))]
}

/** WS_ALLOWED_ORIGINS's origins, written as browsers send them (see originOf); '*' allows every origin. */
export function allowedOrigins (config: Pick<Config, 'WS_ALLOWED_ORIGINS'>): '*' | Set<string> {
  const entries = listOf(config.WS_ALLOWED_ORIGINS)
  if (entries.includes('*')) return '*'
  return new Set(entries.map((entry) => originOf(entry, 'WS_ALLOWED_ORIGINS')))
}

/**
 * An origin as a browser sends it: scheme, host and port, lower case, with no default port
 * or trailing slash (`new URL(…).origin`). An entry written `https://Shop.example/` would
 * otherwise never match the `https://shop.example` a browser sends. Throws (naming the
 * variable) on an entry that is no origin.
 */
function originOf (entry: string, variable: string): string {
  let origin: string | undefined
  try { origin = new URL(entry).origin } catch { /* below */ }
  if (origin === undefined || origin === 'null') {
    throw new ConfigError(variable, `must be origins such as https://shop.example, comma-separated, or * (got ${JSON.stringify(entry)})`)
  }
  return origin
}

/** Config for tests and tools: defaults plus overrides, validated like the environment. */
export function configFrom (overrides: Record<string, string | number | boolean | undefined>): Config {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) env[k] = String(v)
  return loadConfig(env)
}
