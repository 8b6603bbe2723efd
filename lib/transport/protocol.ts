import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ChannelName } from '../auth/channels.js'
import { ClientError, type ErrorCode } from '../core/errors.js'
import type { StreamPosition } from '../core/event.js'
import type { PresenceCounts } from '../core/presence.js'

/**
 * The WebSocket protocol of docs/protocol.md, WebSocket as schemas: every client frame is validated
 * against these before anything acts on it, and the same schemas document the protocol.
 */
/**
 * A request's `id`, echoed in its answer: a string, or a number JSON carries exactly enough
 * to echo (within ±(2^53−1): 9007199254740993 would come back as …992, another request's id).
 */
const MAX_ID_LENGTH = 200
const RequestId = Type.Optional(Type.Union([
  Type.String({ maxLength: MAX_ID_LENGTH }),
  Type.Number({ minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER })
]))
const Channels = Type.Array(ChannelName, { minItems: 1, maxItems: 1000 })
const Since = Type.Object({
  // An offset no channel can reach (1e300) is a bad request, as on the history route.
  offset: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  epoch: Type.Optional(Type.String({ maxLength: 200 }))
})

export const ClientFrames = {
  'system:ping': Type.Object({ type: Type.Literal('system:ping'), id: RequestId }),
  subscribe: Type.Object({
    type: Type.Literal('subscribe'),
    id: RequestId,
    // Also taken beside `payload`: where a client puts it is not ours to guess (docs/protocol.md).
    rewind: Type.Optional(Type.Integer({ minimum: 1, description: 'as payload.rewind, for a client that puts it beside the payload' })),
    payload: Type.Object({
      channels: Channels,
      since: Type.Optional(Type.Record(Type.String(), Since)),
      rewind: Type.Optional(Type.Integer({ minimum: 1, description: 'the last n events of each channel without since, then live' }))
    })
  }),
  unsubscribe: Type.Object({
    type: Type.Literal('unsubscribe'),
    id: RequestId,
    payload: Type.Object({ channels: Channels })
  }),
  'room:join': Type.Object({ type: Type.Literal('room:join'), id: RequestId, payload: Type.Object({ room: ChannelName }) }),
  'room:leave': Type.Object({ type: Type.Literal('room:leave'), id: RequestId, payload: Type.Object({ room: ChannelName }) }),
  'subscribe:admin': Type.Object({ type: Type.Literal('subscribe:admin'), id: RequestId }),
  'subscribe:orders': Type.Object({ type: Type.Literal('subscribe:orders'), id: RequestId }),
  'request:stats': Type.Object({ type: Type.Literal('request:stats'), id: RequestId }),
  'presence:get': Type.Object({
    type: Type.Literal('presence:get'),
    id: RequestId,
    payload: Type.Object({ channel: ChannelName })
  }),
  'auth:refresh': Type.Object({
    type: Type.Literal('auth:refresh'),
    id: RequestId,
    payload: Type.Object({ token: Type.String({ minLength: 1, maxLength: 8192 }) })
  })
} satisfies Record<string, TSchema>

export type ClientFrameType = keyof typeof ClientFrames
export type ClientFrame = { [K in ClientFrameType]: Static<typeof ClientFrames[K]> }[ClientFrameType]

const checkers = Object.fromEntries(
  Object.entries(ClientFrames).map(([type, schema]) => [type, TypeCompiler.Compile(schema)])
) as unknown as Record<ClientFrameType, ReturnType<typeof TypeCompiler.Compile>>

/**
 * The `id` of a frame, when it has a usable one (RequestId), so even a rejected frame's error
 * is matched; an id that is itself refused is not echoed (up to a frame's 64 KiB of it).
 */
function idOf (frame: unknown): string | number | undefined {
  const id = (frame as { id?: unknown })?.id
  if (typeof id === 'string') return id.length <= MAX_ID_LENGTH ? id : undefined
  return typeof id === 'number' && Math.abs(id) <= Number.MAX_SAFE_INTEGER ? id : undefined
}

export class FrameError extends ClientError {
  constructor (code: ErrorCode, message: string, readonly id?: string | number) {
    super(code, message)
  }
}

/**
 * The `id` of a frame that is not otherwise looked at (refused by the rate limit), so the
 * client can match the refusal to its request; undefined when the text has none.
 */
export function requestIdOf (text: string): string | number | undefined {
  try {
    return idOf(JSON.parse(text))
  } catch {
    return undefined
  }
}

/** Parses one text frame into a validated client frame, or throws FrameError(bad_request). */
export function parseClientFrame (text: string): ClientFrame {
  let frame: unknown
  try {
    frame = JSON.parse(text)
  } catch {
    throw new FrameError('bad_request', 'frame is not valid JSON')
  }
  if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
    throw new FrameError('bad_request', 'frame must be a JSON object')
  }
  const id = idOf(frame)
  const type = (frame as { type?: unknown }).type
  if (typeof type !== 'string') throw new FrameError('bad_request', 'missing field: type', id)
  if (!Object.hasOwn(checkers, type)) throw new FrameError('bad_request', `unknown type: ${type.slice(0, 100)}`, id)
  const checker = checkers[type as ClientFrameType]
  if (!checker.Check(frame)) {
    const first = checker.Errors(frame).First()
    const field = first?.path === undefined || first.path === '' ? '(frame)' : first.path.slice(1).replaceAll('/', '.')
    throw new FrameError('bad_request', `invalid field ${field}: ${first?.message ?? 'invalid'}`, id)
  }
  return frame as ClientFrame
}

/** Server → client control frames. Events themselves are encoded by EncodedEvent. */
export const serverFrame = {
  connected: (payload: { connectionId: string, userId: string | null, roles: readonly string[], channels: string[], heartbeatMs: number }) =>
    JSON.stringify({ type: 'system:connected', payload }),
  pong: (id?: string | number) => JSON.stringify({ type: 'system:pong', id, payload: { ts: Date.now() } }),
  error: (code: ErrorCode, message: string, id?: string | number) =>
    JSON.stringify({ type: 'error', id, payload: { code, message } }),
  reply: (type: string, id: string | number | undefined, payload?: unknown) =>
    JSON.stringify({ type, id, payload }),
  /** A channel's live counts; `id` when it answers presence:get. */
  presence: (channel: string, counts: PresenceCounts, id?: string | number) =>
    JSON.stringify({ type: 'presence', id, channel, payload: { connections: counts.connections, users: counts.users } }),
  /** The channel's stream restarted: its next events count on from `position`. */
  reset: (channel: string, position: StreamPosition) =>
    JSON.stringify({ type: 'system:reset', channel, payload: { position: { offset: position.offset, epoch: position.epoch } } })
}
