import { EncodedEvent, type PublishedEvent } from '../lib/core/event.js'
import { entryBody } from '../lib/broker/redis-layout.js'

/**
 * What building one event's wire forms costs, ns per event, against the plain way of
 * building the same bytes: `JSON.stringify` of the whole frame, then `Buffer.from`.
 * Every event a gateway delivers is built once (its WebSocket frame, its SSE data, on
 * Redis its stored entry), whatever its number of recipients: on a Kafka drain, where an
 * event goes to few clients, that once is a sixth of the gateway's main thread
 * (bench/README.md, "Session 34"). The events are the Kafka case's mix of commerce
 * payloads (bench/kafka.ts), each with its payload's JSON given, as the ingress gives it.
 *
 *   npm run bench:event-encoding [-- --events=300000]
 */
const events = Number(process.argv.find((a) => a.startsWith('--events='))?.slice('--events='.length) ?? 300_000)

const payloads: Array<Record<string, unknown>> = [
  { orderId: 'o-12345', userId: 'u-42', status: 'shipped', items: [{ sku: 'sku-1', qty: 2, price: 19.99 }, { sku: 'sku-2', qty: 1, price: 5.5 }], total: 45.48, currency: 'EUR' },
  { productId: 'p-7', sku: 'sku-1', stock: 3, previousStock: 10 },
  { productId: 'p-7', price: 17.49, previousPrice: 19.99, currency: 'EUR' },
  { text: 'Your order shipped', orderId: 'o-12345' }
]
const kinds = [
  { type: 'order.shipped', channel: 'order:o-12345' },
  { type: 'inventory.updated', channel: 'product:p-7' },
  { type: 'product.price_changed', channel: 'product:p-7' },
  { type: 'notification', channel: 'user:u-42' }
]
const jsons = payloads.map((p) => JSON.stringify(p))
const ts = new Date().toISOString()

function eventAt (i: number): PublishedEvent {
  const k = i % kinds.length
  // Fields in the order the brokers set them (a spread here made Node 20 slow to read them).
  return { channel: kinds[k].channel, type: kinds[k].type, payload: payloads[k], offset: i + 1, epoch: 'e1', ts }
}

/** ns per event of `build` over `events` events, after a warm-up of a tenth as many. */
function measure (build: (i: number) => number): number {
  let sink = 0
  for (let i = 0; i < events / 10; i++) sink += build(i)
  const start = process.hrtime.bigint()
  for (let i = 0; i < events; i++) sink += build(i)
  const ns = Number(process.hrtime.bigint() - start) / events
  if (sink === 0) throw new Error('nothing built')
  return ns
}

const rows: Array<[string, number, number]> = []
const cases: Array<[string, (i: number) => number, (i: number) => number]> = [
  ['WebSocket frame (bytes, header included)',
    (i) => new EncodedEvent(eventAt(i), jsons[i % jsons.length]).wsFrameBytes.length,
    (i) => { const e = eventAt(i); return Buffer.from(JSON.stringify({ type: e.type, channel: e.channel, offset: e.offset, payload: e.payload, ts: e.ts })).length }],
  ['SSE data',
    (i) => new EncodedEvent(eventAt(i), jsons[i % jsons.length]).sse.length,
    (i) => { const e = eventAt(i); return JSON.stringify({ channel: e.channel, offset: e.offset, payload: e.payload, ts: e.ts }).length }],
  ['Redis entry body',
    (i) => entryBody(kinds[i % kinds.length].type, jsons[i % jsons.length]).length,
    (i) => JSON.stringify({ type: kinds[i % kinds.length].type, payload: payloads[i % payloads.length] }).length]
]
for (const [name, gateway, plain] of cases) {
  // Alternated twice, so neither always runs on a colder or a warmer engine.
  const g = [measure(gateway), 0]
  const p = [measure(plain), 0]
  g[1] = measure(gateway)
  p[1] = measure(plain)
  rows.push([name, Math.min(...g), Math.min(...p)])
}

const width = Math.max(...rows.map(([name]) => name.length))
process.stdout.write(`Building one event's wire forms, ${events} events of the Kafka case's mix, Node ${process.version} (best of two runs each):\n`)
process.stdout.write(`${'form'.padEnd(width)}  gateway ns  JSON.stringify whole ns  ratio\n`)
for (const [name, g, p] of rows) {
  process.stdout.write(`${name.padEnd(width)}  ${g.toFixed(0).padStart(10)}  ${p.toFixed(0).padStart(23)}  ${(g / p).toFixed(2)}×\n`)
}
