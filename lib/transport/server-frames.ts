import { Type, type TSchema } from '@sinclair/typebox'
import { CloseCode, type ErrorCode } from '../core/errors.js'
import { ChannelName } from '../auth/channels.js'
import { ClusterStatsSchema } from '../core/stats-schema.js'

/**
 * The server side of docs/protocol.md, WebSocket / Server-Sent Events as schemas: every WebSocket frame and SSE event the
 * gateway sends. protocol.ts encodes them on the hot path by hand; the tests check that
 * what it really sends matches these, and lib/ops/asyncapi.ts documents the protocol from
 * them, so the document cannot drift from the wire.
 */

export const ERROR_CODES = ['bad_request', 'forbidden', 'rate_limited', 'too_many_channels', 'internal'] as const
// Fails to compile when errors.ts gains a code that is not listed here.
type MissingErrorCode = Exclude<ErrorCode, typeof ERROR_CODES[number]>
const everyErrorCodeListed: [MissingErrorCode] extends [never] ? true : MissingErrorCode = true
void everyErrorCodeListed

/** What each close code tells the client (and the operator watching them). */
export const CLOSE_CODES: Record<keyof typeof CloseCode, { code: number, meaning: string }> = {
  GOING_AWAY: { code: CloseCode.GOING_AWAY, meaning: 'going away: the server or the client ended the connection normally' },
  POLICY_VIOLATION: { code: CloseCode.POLICY_VIOLATION, meaning: 'policy violation: the client kept flooding after rate_limited errors' },
  MESSAGE_TOO_BIG: { code: CloseCode.MESSAGE_TOO_BIG, meaning: 'a frame was larger than WS_MAX_PAYLOAD_BYTES' },
  INTERNAL_ERROR: { code: CloseCode.INTERNAL_ERROR, meaning: 'internal error on the server' },
  SERVICE_RESTART: { code: CloseCode.SERVICE_RESTART, meaning: 'server restarting (graceful shutdown): reconnect, possibly to another instance, and resubscribe with since' },
  TRY_AGAIN_LATER: { code: CloseCode.TRY_AGAIN_LATER, meaning: 'connection limit reached (MAX_CONNECTIONS or MAX_CONNECTIONS_PER_USER): try again later' },
  TOKEN_EXPIRED: { code: CloseCode.TOKEN_EXPIRED, meaning: 'the token expired: reconnect with a fresh token (or send auth:refresh before exp)' },
  DISCONNECTED: { code: CloseCode.DISCONNECTED, meaning: 'disconnected by an admin or service, or the token was revoked: do not reconnect with the same token' },
  TOO_SLOW: { code: CloseCode.TOO_SLOW, meaning: 'too slow: the send buffer overflowed SEND_BUFFER_LIMIT_BYTES; a client that stopped reading may only see the connection drop' }
}

const RequestId = Type.Optional(Type.Union([Type.String(), Type.Number()], { description: 'the id of the client frame this answers, echoed back' }))
const Channels = Type.Array(ChannelName)
const Position = Type.Object({
  offset: Type.Integer({ minimum: 0, description: 'offset of the last event published in the channel (0 when none yet)' }),
  epoch: Type.String({ description: 'offsets of different epochs are not comparable' })
}, { additionalProperties: false })
const strict = { additionalProperties: false }
const Presence = Type.Object({
  connections: Type.Integer({ minimum: 0, description: 'connections subscribed to the channel, on every instance' }),
  users: Type.Integer({ minimum: 0, description: 'distinct signed-in users among them (anonymous connections count in connections only)' })
}, strict)

export const ServerFrames = {
  'system:connected': Type.Object({
    type: Type.Literal('system:connected'),
    payload: Type.Object({
      connectionId: Type.String(),
      userId: Type.Union([Type.String(), Type.Null()], { description: 'null for an anonymous connection' }),
      roles: Type.Array(Type.String()),
      channels: Type.Array(ChannelName, { description: 'channels held from the start: the user\'s own user:<id>' }),
      heartbeatMs: Type.Integer({ description: 'WebSocket ping interval; no pong within two intervals closes the connection' })
    }, strict)
  }, { ...strict, description: 'the first frame of every connection' }),
  'system:pong': Type.Object({
    type: Type.Literal('system:pong'),
    id: RequestId,
    payload: Type.Object({ ts: Type.Integer({ description: 'server time, epoch milliseconds' }) }, strict)
  }, strict),
  subscribed: Type.Object({
    type: Type.Literal('subscribed'),
    id: RequestId,
    payload: Type.Object({
      channels: Channels,
      positions: Type.Record(Type.String(), Position),
      recovered: Type.Record(Type.String(), Type.Boolean(), {
        description: 'per channel given in since: false when the server no longer holds every missed event (reload state)'
      })
    }, strict)
  }, { ...strict, description: 'answers subscribe, room:join, subscribe:admin and subscribe:orders; the missed events follow it, in order' }),
  unsubscribed: Type.Object({
    type: Type.Literal('unsubscribed'),
    id: RequestId,
    payload: Type.Object({ channels: Channels }, strict)
  }, { ...strict, description: 'answers unsubscribe and room:leave' }),
  stats: Type.Object({
    type: Type.Literal('stats'),
    id: RequestId,
    payload: ClusterStatsSchema
  }, { ...strict, description: 'answers request:stats (admins only): the body of GET /realtime/stats' }),
  'auth:refreshed': Type.Object({
    type: Type.Literal('auth:refreshed'),
    id: RequestId
  }, { ...strict, description: 'answers auth:refresh: the connection now lives until the new token\'s exp' }),
  presence: Type.Object({
    type: Type.Literal('presence'),
    id: RequestId,
    channel: ChannelName,
    payload: Presence
  }, { ...strict, description: 'a channel\'s live counts over every instance: right after subscribing to a channel under PRESENCE_CHANNELS, then as they change (at most once per PRESENCE_INTERVAL_MS); also the answer to presence:get. Not an event: no offset, never replayed' }),
  'system:reset': Type.Object({
    type: Type.Literal('system:reset'),
    channel: ChannelName,
    payload: Type.Object({ position: Position }, strict)
  }, { ...strict, description: 'the channel\'s stream restarted (its history was lost, a new epoch) or skipped events: its next events count on from position; reload the channel\'s state' }),
  error: Type.Object({
    type: Type.Literal('error'),
    id: RequestId,
    payload: Type.Object({
      code: Type.Union(ERROR_CODES.map((code) => Type.Literal(code))),
      message: Type.String()
    }, strict)
  }, { ...strict, description: 'a refused or malformed frame; never closes the connection by itself' })
} satisfies Record<string, TSchema>

export type ServerFrameType = keyof typeof ServerFrames

const EventFields = {
  channel: ChannelName,
  offset: Type.Integer({ minimum: 1, description: 'grows by one per event within the channel and epoch, across instances' }),
  payload: Type.Object({}, { additionalProperties: true }),
  ts: Type.String({ format: 'date-time', description: 'when the broker accepted the event' })
}

/** An event on a subscribed channel: `type` is the event's own type (`order:updated`, …). */
export const EventFrame = Type.Object({
  type: Type.String({ minLength: 1, description: 'the event type, e.g. order:updated, inventory:updated, notification' }),
  ...EventFields
}, { ...strict, description: 'one event of a subscribed channel, in offset order' })

/** SSE events of docs/protocol.md, Server-Sent Events: `event:` is the key, `data:` is the schema. */
export const SseEvents = {
  'system:connected': Type.Object({
    connectionId: Type.String(),
    userId: Type.Union([Type.String(), Type.Null()]),
    channels: Channels
  }, { ...strict, description: 'the first event of every stream; it carries an id: cursor' }),
  'system:recovery': Type.Object({
    recovered: Type.Boolean()
  }, { ...strict, description: 'sent when Last-Event-ID/lastEventId could not be fully recovered: reload state' }),
  'system:disconnect': Type.Object({
    code: Type.Literal(CloseCode.DISCONNECTED),
    reason: Type.String()
  }, { ...strict, description: 'an admin or service disconnected the user, or revoked its token: the stream ends; do not reconnect with the same token' }),
  presence: Type.Object({
    channel: ChannelName,
    payload: Presence
  }, { ...strict, description: 'a channel\'s live counts (as the WebSocket presence frame); no id: line' }),
  'system:reset': Type.Object({
    channel: ChannelName,
    payload: Type.Object({ position: Position }, strict)
  }, { ...strict, description: 'the channel\'s stream restarted: its next events count on from position (the id: cursor moves there); reload its state' })
} satisfies Record<string, TSchema>

/** The data of every other SSE event; its `event:` line is the event type and its `id:` the resume cursor. */
export const SseEventData = Type.Object(EventFields, strict)
