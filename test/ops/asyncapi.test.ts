import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { FormatRegistry, type TSchema } from '@sinclair/typebox'
import AjvModule from 'ajv'
import t, { type Test } from 'tap'
import { buildAsyncApiDocument } from '../../lib/ops/asyncapi.js'
import { ClientFrames } from '../../lib/transport/protocol.js'
import { EventFrame, ServerFrames, SseEventData, SseEvents } from '../../lib/transport/server-frames.js'
import { adminToken, buildTestApp, post, serviceToken, SseClient, startServer, WsClient } from '../support/helper.js'

const require = createRequire(import.meta.url)
const Ajv = AjvModule.default
type Doc = Record<string, any>

const doc = buildAsyncApiDocument({ host: 'gateway.example:443', secure: true, version: '0.1.0' }) as Doc

/** Frame types named by the messages of one channel, following their $refs. */
function messageNames (channel: string): string[] {
  return Object.values(doc.channels[channel].messages as Record<string, { $ref: string }>).map((m) => resolve(m.$ref).name)
}

function resolve (ref: string): any {
  if (!ref.startsWith('#/')) throw new Error(`external $ref ${ref}`)
  let node: any = doc
  for (const part of ref.slice(2).split('/')) {
    node = node?.[part.replaceAll('~1', '/').replaceAll('~0', '~')]
    if (node === undefined) throw new Error(`dangling $ref ${ref}`)
  }
  return node
}

t.test('the document is AsyncAPI 3 and valid against the official 3.0.0 schema', async (t) => {
  t.match(doc.asyncapi, /^3\.\d+\.\d+$/)
  const schema = JSON.parse(readFileSync(require.resolve('@asyncapi/specs/schemas/3.0.0.json'), 'utf8'))
  // The spec embeds the draft-07 meta-schema itself: ajv must not bring its own copy too.
  const validate = new Ajv({ meta: false, validateSchema: false, strict: false, validateFormats: false, allErrors: true }).compile(schema)
  t.ok(validate(doc), 'valid: ' + JSON.stringify(validate.errors?.slice(0, 5)))
  // The validator does bite: AsyncAPI 2's `publish` is no action in 3.
  const broken = structuredClone(doc)
  broken.operations['ws.event'].action = 'publish'
  t.notOk(validate(broken), 'an AsyncAPI 2 action is refused')
  t.equal(doc.servers.websocket.protocol, 'wss')
  t.equal(doc.channels.websocket.address, '/ws')
  t.equal(doc.channels.sse.address, '/sse')
})

t.test('every $ref in the document resolves', async (t) => {
  const refs: string[] = []
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) { node.forEach(walk); return }
    if (node === null || typeof node !== 'object') return
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') refs.push(v)
      else walk(v)
    }
  }
  walk(doc)
  t.ok(refs.length > 20, `${refs.length} refs`)
  for (const ref of refs) t.doesNotThrow(() => resolve(ref), ref)
})

t.test('every client and server frame of docs/protocol.md, WebSocket / Server-Sent Events is in the document, with its schema', async (t) => {
  const ws = messageNames('websocket')
  for (const type of Object.keys(ClientFrames)) t.ok(ws.includes(type), `client frame ${type}`)
  for (const type of Object.keys(ServerFrames)) t.ok(ws.includes(type), `server frame ${type}`)
  t.ok(ws.includes('event'), 'the event frame')
  const sse = messageNames('sse')
  for (const type of [...Object.keys(SseEvents), 'event']) t.ok(sse.includes(type), `SSE ${type}`)
  // The contract's own list, so a frame dropped from the schemas is caught here too.
  for (const type of ['system:ping', 'subscribe', 'unsubscribe', 'room:join', 'room:leave', 'subscribe:admin',
    'subscribe:orders', 'request:stats', 'auth:refresh', 'system:connected', 'system:pong', 'subscribed',
    'unsubscribed', 'stats', 'auth:refreshed', 'error']) t.ok(ws.includes(type), `protocol frame ${type}`)

  const subscribe = resolve(resolve('#/channels/websocket/messages/client.subscribe').$ref)
  t.same(resolve(subscribe.payload.$ref), JSON.parse(JSON.stringify(ClientFrames.subscribe)), 'the payload is the validating schema')
  const error = resolve(resolve(doc.channels.websocket.messages['server.error'].$ref).payload.$ref)
  t.same(error.properties.payload.properties.code.anyOf.map((c: { const: string }) => c.const),
    ['bad_request', 'forbidden', 'rate_limited', 'too_many_channels', 'internal'])
  for (const code of ['1001', '1008', '1009', '1011', '1012', '1013', '4001', '4003', '4008']) {
    t.match(doc.channels.websocket.description, `| ${code} |`, `close code ${code} described`)
  }
  t.match(doc.channels.websocket.description, /\| 4003 \| [^|]*revoked[^|]*same token/, '4003: disconnected or revoked, not again with the same token')
  // The contract's SSE list (§5), the disconnect frame (issue 15) with its 4003.
  for (const type of ['system:connected', 'system:recovery', 'system:disconnect', 'system:reset', 'presence']) t.ok(sse.includes(type), `SSE contract ${type}`)
  const disconnect = resolve(resolve(doc.channels.sse.messages['system.disconnect'].$ref).payload.$ref)
  t.equal(disconnect.properties.code.const, 4003, 'system:disconnect carries code 4003')
  for (const acl of ['`user:<id>`', '`admin`', '`orders`', '`product:<id>`', 'role `admin`']) {
    t.match(doc.channels.websocket.description, acl, `ACL mentions ${acl}`)
    t.match(doc.channels.sse.description, acl)
  }
})

t.test('GET /api/asyncapi.json serves it, and Swagger UI links it', async (t) => {
  const app = await buildTestApp(t)
  const res = await app.inject({ url: '/api/asyncapi.json', headers: { host: 'rt.example:8080' } })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /application\/json/)
  const served = res.json()
  t.equal(served.asyncapi, '3.0.0')
  t.equal(served.servers.websocket.host, 'rt.example:8080')
  t.equal(served.servers.websocket.protocol, 'ws')
  const openapi = (await app.inject({ url: '/api/docs/json' })).json()
  t.match(openapi.info.description, '/api/asyncapi.json')
})

// TypeBox checks formats only once they are registered; ISO-8601 as Date.prototype.toISOString writes it.
FormatRegistry.Set('date-time', (value) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value) && !Number.isNaN(Date.parse(value)))

/** Checks a frame against its schema and records its type. */
function checker (t: Test, seen: Set<string>) {
  return (schema: TSchema, frame: unknown, what: string) => {
    const check = TypeCompiler.Compile(schema)
    t.ok(check.Check(frame), `${what} matches its schema: ${JSON.stringify(frame)} ${JSON.stringify([...check.Errors(frame)].slice(0, 2).map((e) => `${e.path} ${e.message}`))}`)
    seen.add(what)
  }
}

t.test('what the server really sends matches the documented schemas', async (t) => {
  const { app, url, wsUrl } = await startServer(t)
  const seen = new Set<string>()
  const matches = checker(t, seen)

  const ws = await WsClient.connect(t, wsUrl, adminToken('asyncapi-admin'))
  matches(ServerFrames['system:connected'], ws.greeting, 'system:connected')
  matches(ServerFrames['system:pong'], await ws.request({ type: 'system:ping' }), 'system:pong')
  const subscribed = await ws.subscribe(['product:aa-1'], { 'product:aa-1': { offset: 0 } })
  matches(ServerFrames.subscribed, subscribed, 'subscribed')
  const published = await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:aa-1', type: 'inventory:updated', payload: { stock: 3 } })
  t.equal(published.status, 202)
  matches(EventFrame, await ws.next((f) => f.channel === 'product:aa-1'), 'event')
  matches(ServerFrames.presence, await ws.nextPresence(), 'presence')
  matches(ServerFrames.presence, await ws.request({ type: 'presence:get', payload: { channel: 'product:aa-1' } }), 'presence (answer)')
  // A stream restart, as the Redis broker reports one (lib/broker/broker.ts ResetFn).
  app.hub.reset('product:aa-1', { offset: 0, epoch: 'a-new-epoch' })
  matches(ServerFrames['system:reset'], await ws.next((f) => f.type === 'system:reset'), 'system:reset')
  matches(ServerFrames.stats, await ws.request({ type: 'request:stats' }), 'stats')
  matches(ServerFrames['auth:refreshed'], await ws.request({ type: 'auth:refresh', payload: { token: adminToken('asyncapi-admin') } }), 'auth:refreshed')
  matches(ServerFrames.unsubscribed, await ws.request({ type: 'unsubscribe', payload: { channels: ['product:aa-1'] } }), 'unsubscribed')
  matches(ServerFrames.error, await ws.request({ type: 'subscribe', payload: { channels: ['no such channel!'] } }), 'error')
  t.same([...seen].filter((k) => !k.includes(' ')).sort(), [...Object.keys(ServerFrames), 'event'].sort(), 'every server frame type was seen on the wire')

  // SSE: a cursor that cannot be read makes the server say recovery failed.
  const sse = await SseClient.open(t, `${url}/sse?channels=product:aa-2&lastEventId=not-a-cursor`, { authorization: `Bearer ${adminToken('asyncapi-admin')}` })
  t.equal(sse.status, 200)
  const [connected] = await sse.waitFor(1, (e) => e.event === 'system:connected')
  matches(SseEvents['system:connected'], connected.data, 'sse system:connected')
  const [recovery] = await sse.waitFor(1, (e) => e.event === 'system:recovery')
  matches(SseEvents['system:recovery'], recovery.data, 'sse system:recovery')
  await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:aa-2', type: 'product:updated', payload: { price: 9 } })
  const [event] = await sse.waitFor(1, (e) => e.event === 'product:updated')
  matches(SseEventData, event.data, 'sse event')
  t.type(event.id, 'string', 'events carry a cursor')
  await new Promise((resolve) => setTimeout(resolve, 100))
  matches(SseEvents.presence, sse.presence[0]?.data, 'sse presence')
  app.hub.reset('product:aa-2', { offset: 1, epoch: 'another-epoch' })
  const [reset] = await sse.waitFor(1, (e) => e.event === 'system:reset')
  matches(SseEvents['system:reset'], reset.data, 'sse system:reset')
  t.match(reset.id, /product:aa-2,another-epoch,1/, 'the cursor moved to the reset position')
})
