import fc from 'fast-check'
import t from 'tap'
import { buildTestApp, serviceToken } from '../support/helper.js'

/**
 * The publishing routes take bodies from services (docs/protocol.md, HTTP API), through the real
 * buildApp and the memory broker. Whatever the body (any JSON, bodies close to valid ones with
 * fields of the wrong kind, structures nested thousands deep, payloads over the limits, bytes
 * that are not JSON at all), the answer is 202, 400, 413 or 422 in the documented shape,
 * never a 500 and never a hang.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const NUM_RUNS = 150
const ROUTES = [
  '/realtime/publish', '/realtime/broadcast', '/realtime/notify',
  '/realtime/broadcast/order', '/realtime/broadcast/inventory', '/realtime/test/notification'
]

/** JSON text nested `depth` levels deep, arrays and objects in turn. */
const nested = (depth: number): string => {
  const open = Array.from({ length: depth }, (_, i) => i % 2 === 0 ? '[' : '{"a":').join('')
  const close = Array.from({ length: depth }, (_, i) => (depth - 1 - i) % 2 === 0 ? ']' : '}').join('')
  return `${open}1${close}`
}

/** Field values as JSON text, from ordinary to hostile. */
const anyValue: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
  { weight: 3, arbitrary: fc.constantFrom('room:a', 'event:1', 'u1', 'o1', 'p1', 'shipped', 'system:reset', 't', 7, 0, -1, 1.5, 2 ** 53 + 2, '', 'a b').map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }).map(nested) },
  { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 300_000 }).map((n) => `{"text":"${'x'.repeat(n)}"}`) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom('room:a', 'event:b', 'product:1', 'bad name', 'u1', 3), { maxLength: 1100 }).map((v) => JSON.stringify(v)) }
)

const objectText = (fields: Record<string, string>): string =>
  `{${Object.entries(fields).map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',')}}`

/** Bodies with the fields the routes read, each of any kind, plus fields nobody reads. */
const bodyLike = fc.record({
  channel: anyValue,
  channels: anyValue,
  type: anyValue,
  payload: fc.oneof(anyValue, fc.dictionary(fc.string({ maxLength: 10 }), anyValue, { maxKeys: 4 }).map(objectText)),
  userId: anyValue,
  userIds: anyValue,
  orderId: anyValue,
  status: anyValue,
  productId: anyValue,
  stock: anyValue,
  message: anyValue,
  extra: anyValue
}, { requiredKeys: [] }).map(objectText)

const channel = fc.oneof(fc.constantFrom('room:a', 'event:1', 'product:9', 'inventory'), fc.stringMatching(/^room:[a-z0-9]{1,12}$/))
const id = fc.oneof(fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.integer({ min: -1000, max: 2 ** 53 - 1 }))
const json = (v: unknown) => JSON.stringify(v)
/** An event payload: small and ordinary, or with one field of any kind (deep, huge, …). */
const payload = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }).map(json),
  fc.tuple(fc.string({ maxLength: 8 }), anyValue).map(([key, value]) => objectText({ [key]: value }))
)

/** A valid body for each route (as field → JSON text), which the next step may spoil. */
const validFields: Record<string, fc.Arbitrary<Record<string, string>>> = {
  '/realtime/publish': fc.record({ channel: channel.map(json), type: fc.constantFrom('t', 'order:updated').map(json), payload }),
  '/realtime/broadcast': fc.record({ channels: fc.array(channel, { minLength: 1, maxLength: 5 }).map(json), type: fc.constant('"t"'), payload }),
  '/realtime/notify': fc.oneof(
    fc.record({ userId: id.map(json), payload }),
    fc.record({ userIds: fc.array(id, { minLength: 1, maxLength: 5 }).map(json), type: fc.constant('"n"'), payload })
  ),
  '/realtime/broadcast/order': fc.record({ userId: id.map(json), orderId: id.map(json), status: fc.constant('"shipped"') }),
  '/realtime/broadcast/inventory': fc.record({ productId: id.map(json), stock: fc.integer({ min: -5, max: 100 }).map(json) }),
  '/realtime/test/notification': fc.record({ userId: id.map(json), message: fc.constant('"hi"') })
}

/** A valid body, then maybe one field replaced by a value of any kind, maybe a field nobody reads. */
const nearlyValid = (url: string) => fc.tuple(
  validFields[url],
  fc.option(fc.tuple(fc.constantFrom('channel', 'channels', 'type', 'payload', 'userId', 'userIds', 'orderId', 'status', 'productId', 'stock', 'message'), anyValue), { nil: undefined }),
  fc.option(anyValue, { nil: undefined })
).map(([fields, override, extra]) => {
  const spoiled = { ...fields }
  if (override !== undefined) spoiled[override[0]] = override[1]
  if (extra !== undefined) spoiled.extra = extra
  return Buffer.from(objectText(spoiled))
})

const anyBody = fc.oneof(
  { weight: 5, arbitrary: bodyLike.map((text) => Buffer.from(text)) },
  { weight: 2, arbitrary: fc.json({ maxDepth: 4 }).map((text) => Buffer.from(text)) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 500 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 1200 * 1024 }).map((n) => Buffer.from(`{"channel":"room:a","type":"t","payload":{"x":"${'y'.repeat(n)}"}}`)) }
)

t.test('any body on any publishing route: 202, 400, 413 or 422, never a 500', async (t) => {
  const app = await buildTestApp(t, { HTTP_RATE_LIMIT_PER_MINUTE: 100_000_000 })
  const authorization = `Bearer ${serviceToken()}`
  const seen = new Map<number, number>()
  await fc.assert(fc.asyncProperty(
    fc.constantFrom(...ROUTES).chain((url) => fc.tuple(fc.constant(url), fc.oneof({ weight: 3, arbitrary: nearlyValid(url) }, { weight: 2, arbitrary: anyBody }))),
    fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom('k1', 'k2', 'k3') }),
    async ([url, payload], key) => {
      const res = await app.inject({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/json', authorization, ...(key === undefined ? {} : { 'idempotency-key': key }) },
        payload
      })
      seen.set(res.statusCode, (seen.get(res.statusCode) ?? 0) + 1)
      if (![202, 400, 413, 422].includes(res.statusCode)) throw new Error(`${url} answered ${res.statusCode}: ${res.body.slice(0, 300)}`)
      const answer = res.json()
      if (res.statusCode === 202 && typeof answer.positions !== 'object') throw new Error(`202 without positions: ${res.body.slice(0, 300)}`)
      if (res.statusCode !== 202 && (answer.statusCode !== res.statusCode || typeof answer.message !== 'string')) {
        throw new Error(`error body not in the documented shape: ${res.body.slice(0, 300)}`)
      }
    }
  ), { numRuns: NUM_RUNS })
  t.comment(`statuses seen: ${JSON.stringify(Object.fromEntries(seen))}`)
  t.ok(seen.has(400) && seen.has(202), 'some bodies were refused, some published')
})
