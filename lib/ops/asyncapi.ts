import type { TSchema } from '@sinclair/typebox'
import { ADMIN_CHANNEL, INVENTORY_CHANNEL, ORDERS_CHANNEL, PRODUCTS_CHANNEL } from '../auth/channels.js'
import { ClientFrames } from '../transport/protocol.js'
import { CLOSE_CODES, ERROR_CODES, EventFrame, ServerFrames, type ServerFrameType, SseEventData, SseEvents } from '../transport/server-frames.js'

/**
 * The AsyncAPI 3 document of the WebSocket (/ws) and SSE (/sse) protocol, built from the
 * same TypeBox schemas that validate client frames (protocol.ts) and describe server
 * frames (server-frames.ts), so it cannot drift from the wire. Pure: the route serves it.
 */

export interface AsyncApiOptions {
  /** host[:port] clients connect to, as the request that asked for the document saw it. */
  host: string
  /** Whether that request came over TLS (wss/https). */
  secure: boolean
  version: string
}

/** Component keys may not contain ':' — `subscribe:admin` becomes `subscribe.admin`. */
const key = (type: string): string => type.replaceAll(':', '.')

/** TypeBox schemas carry symbol keys; a JSON round-trip leaves plain JSON Schema. */
const plain = (schema: TSchema): Record<string, unknown> => JSON.parse(JSON.stringify(schema))

/** What the server answers to each client frame (besides `error`). */
const REPLIES: Record<keyof typeof ClientFrames, ServerFrameType> = {
  'system:ping': 'system:pong',
  subscribe: 'subscribed',
  unsubscribe: 'unsubscribed',
  'room:join': 'subscribed',
  'room:leave': 'unsubscribed',
  'subscribe:admin': 'subscribed',
  'subscribe:orders': 'subscribed',
  'request:stats': 'stats',
  'presence:get': 'presence',
  'auth:refresh': 'auth:refreshed'
}

const CLIENT_SUMMARIES: Record<keyof typeof ClientFrames, string> = {
  'system:ping': 'Application-level ping.',
  subscribe: 'Subscribe to channels; with `since` (the last offset seen per channel) the missed events are replayed after the ack; with `rewind: n`, the last n events of each channel without since (rewind 1: the current state).',
  unsubscribe: 'Leave channels.',
  'room:join': 'Subscribe to one channel (`event:<id>`, `room:<name>`, …).',
  'room:leave': 'Leave one channel.',
  'subscribe:admin': 'Subscribe to `admin` (role admin).',
  'subscribe:orders': 'Admins get the `orders` channel; a user is told its orders already reach `user:<id>`.',
  'request:stats': 'Ask for cluster stats (role admin).',
  'presence:get': 'Ask for a channel\'s live counts (a channel it may subscribe to, under PRESENCE_CHANNELS).',
  'auth:refresh': 'Replace the token before it expires (same `sub`); the connection then lives until the new `exp`, with the new token\'s roles: channels they may not read are left (an `unsubscribed` frame without id says which).'
}

export const CHANNEL_ACL = [
  '| channel | who may subscribe |',
  '| --- | --- |',
  '| `user:<id>` | only the user `<id>`; every authenticated connection holds its own from the start |',
  `| \`${ADMIN_CHANNEL}\`, \`${ORDERS_CHANNEL}\` | role \`admin\` |`,
  `| \`${INVENTORY_CHANNEL}\`, \`${PRODUCTS_CHANNEL}\`, \`product:<id>\`, \`event:<id>\`, \`room:<name>\` | anyone, anonymous included when ALLOW_ANONYMOUS=true |`,
  '',
  'A channel name is 1–200 characters of `[A-Za-z0-9_\\-:.@]`. Any other channel is refused (`forbidden`, or HTTP 403 on /sse).'
].join('\n')

const CLOSE_TABLE = [
  '| close code | meaning |', '| --- | --- |',
  ...Object.values(CLOSE_CODES).map(({ code, meaning }) => `| ${code} | ${meaning} |`)
].join('\n')

const WS_DESCRIPTION = `Every frame, both ways, is one JSON object. A bad or expired token, or none where
anonymous access is off, is refused before the upgrade with HTTP 401. The token travels in
\`Authorization: Bearer <jwt>\` or the \`token\` query parameter.

\`id\` on a client frame is optional and echoed on its answer. Error codes: ${ERROR_CODES.map((c) => `\`${c}\``).join(', ')};
an \`error\` frame never closes the connection by itself.

Heartbeat: the server pings at the WebSocket level every \`heartbeatMs\` and closes a
connection that has not answered within two intervals.

## Who may subscribe

${CHANNEL_ACL}

## Close codes

${CLOSE_TABLE}`

const SSE_DESCRIPTION = `\`GET /sse?channels=product:7,inventory\` (token in \`Authorization\` or \`token\`). The user's
own \`user:<id>\` is always included. Refusals are plain HTTP: 401 bad token, 403 a channel it
may not read, 400 a bad channel list, 503 connection limit.

Every gateway event becomes one SSE event: \`event:\` is its type, \`data:\` the JSON below, and
\`id:\` an opaque cursor of every channel's position. Reconnect with \`Last-Event-ID\`
(EventSource does it by itself) or \`?lastEventId=\` to get every missed event, in order,
with no duplicates; when that is no longer possible \`system:recovery\` comes first with
\`{"recovered":false}\`. Comment lines (\`: heartbeat\`) keep proxies from closing idle streams.

## Who may subscribe

${CHANNEL_ACL}`

type Messages = Record<string, Record<string, unknown>>

function message (name: string, schema: TSchema, summary?: string): Record<string, unknown> {
  const payload = plain(schema)
  return { name, title: name, summary: summary ?? payload.description ?? name, payload }
}

export function buildAsyncApiDocument (options: AsyncApiOptions): Record<string, unknown> {
  const wsMessages: Messages = {}
  const schemas: Record<string, unknown> = {}
  for (const [type, schema] of Object.entries(ClientFrames)) {
    wsMessages[`client.${key(type)}`] = message(type, schema, CLIENT_SUMMARIES[type as keyof typeof ClientFrames])
  }
  for (const [type, schema] of Object.entries(ServerFrames)) wsMessages[`server.${key(type)}`] = message(type, schema)
  wsMessages['server.event'] = message('event', EventFrame)

  const sseMessages: Messages = {}
  for (const [type, schema] of Object.entries(SseEvents)) sseMessages[key(type)] = message(type, schema)
  sseMessages.event = message('event', SseEventData, 'any event of a subscribed channel: `event:` is its type (order:updated, …)')

  // Messages live in components once; channels and operations refer to them.
  const components: Messages = {}
  const refs = (prefix: string, messages: Messages) => Object.fromEntries(Object.entries(messages).map(([k, m]) => {
    const id = `${prefix}.${k}`
    schemas[id] = m.payload
    components[id] = { ...m, payload: { $ref: `#/components/schemas/${id}` } }
    return [k, { $ref: `#/components/messages/${id}` }]
  }))
  const ws = (k: string) => ({ $ref: `#/channels/websocket/messages/${k}` })
  const sse = (k: string) => ({ $ref: `#/channels/sse/messages/${k}` })

  const operations: Record<string, unknown> = {
    'ws.connected': { action: 'send', channel: { $ref: '#/channels/websocket' }, summary: 'Greets every new connection.', messages: [ws('server.system.connected')] },
    'ws.event': { action: 'send', channel: { $ref: '#/channels/websocket' }, summary: 'Pushes the events of subscribed channels, in offset order.', messages: [ws('server.event')] },
    'ws.reset': { action: 'send', channel: { $ref: '#/channels/websocket' }, summary: 'Announces a channel whose stream restarted, before its next event.', messages: [ws('server.system.reset')] },
    'ws.presence': { action: 'send', channel: { $ref: '#/channels/websocket' }, summary: 'Pushes live counts of presence channels as they change.', messages: [ws('server.presence')] },
    'sse.stream': {
      action: 'send',
      channel: { $ref: '#/channels/sse' },
      summary: 'The event stream.',
      messages: Object.keys(sseMessages).map(sse)
    }
  }
  for (const type of Object.keys(ClientFrames) as Array<keyof typeof ClientFrames>) {
    operations[`ws.${key(type)}`] = {
      action: 'receive',
      channel: { $ref: '#/channels/websocket' },
      summary: CLIENT_SUMMARIES[type],
      messages: [ws(`client.${key(type)}`)],
      reply: { channel: { $ref: '#/channels/websocket' }, messages: [ws(`server.${key(REPLIES[type])}`), ws('server.error')] }
    }
  }

  const security = [{ $ref: '#/components/securitySchemes/bearer' }, { $ref: '#/components/securitySchemes/tokenQuery' }]
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'realtime-gateway streams',
      version: options.version,
      description: 'The WebSocket and Server-Sent Events protocol of the gateway. The HTTP API is at /api/docs (OpenAPI).'
    },
    defaultContentType: 'application/json',
    servers: {
      websocket: { host: options.host, protocol: options.secure ? 'wss' : 'ws', description: 'WebSocket endpoint', security },
      http: { host: options.host, protocol: options.secure ? 'https' : 'http', description: 'Server-Sent Events endpoint', security }
    },
    channels: {
      websocket: {
        address: '/ws',
        title: 'WebSocket',
        description: WS_DESCRIPTION,
        servers: [{ $ref: '#/servers/websocket' }],
        messages: refs('ws', wsMessages),
        bindings: { ws: { method: 'GET', query: { type: 'object', properties: { token: { type: 'string', description: 'JWT, for browsers' } } } } }
      },
      sse: {
        address: '/sse',
        title: 'Server-Sent Events',
        description: SSE_DESCRIPTION,
        servers: [{ $ref: '#/servers/http' }],
        messages: refs('sse', sseMessages)
      }
    },
    operations,
    components: {
      schemas,
      messages: components,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
        tokenQuery: { type: 'httpApiKey', name: 'token', in: 'query' }
      }
    }
  }
}
