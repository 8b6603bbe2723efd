import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Revocation } from '../lib/auth/revocations.js'
import { MAX_TARGETS, SubjectId } from '../lib/ingress/ingress-schemas.js'
import { ErrorReply } from './schemas.js'

const Reason = Type.Optional(Type.String({ maxLength: 200, description: 'told to the client (WS close reason, SSE system:disconnect)' }))
const Moment = (description: string) => Type.Union([
  Type.String({ minLength: 1, maxLength: 40, description: 'ISO 8601' }),
  Type.Integer({ minimum: 0, maximum: 253_402_300_799, description: 'Unix seconds' })
], { description })

const DisconnectBody = Type.Object({
  userId: Type.Optional(SubjectId('one user, as its tokens\' sub names it')),
  userIds: Type.Optional(Type.Array(SubjectId('a user'), { minItems: 1, maxItems: MAX_TARGETS })),
  reason: Reason
})

const RevokeBody = Type.Object({
  userId: Type.Optional(SubjectId('revoke this user\'s tokens (its tokens\' sub)')),
  issuedBefore: Type.Optional(Moment('tokens issued at or before this are refused (default: now); a token without iat counts as issued before')),
  jti: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'or revoke the one token with this jti' })),
  expiresAt: Type.Optional(Moment('how long to remember the jti (its exp; default: REVOCATION_TTL_SECONDS)')),
  reason: Reason
})

class FieldError extends Error {
  readonly statusCode = 400
}

const ISO_MOMENT = /^(\d{4})-(\d\d)-(\d\d)(T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?)?$/

/** Whether the year, month and day name a day of the calendar (Date.parse takes 2026-02-30 as March 2). */
function isCalendarDay (year: number, month: number, day: number): boolean {
  const date = new Date(Date.UTC(year, month - 1, day))
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day
}

/** An ISO 8601 time or Unix seconds, as epoch milliseconds; FieldError naming `field` otherwise. */
function momentOf (value: string | number, field: string): number {
  if (typeof value === 'number') return value * 1000
  const parts = ISO_MOMENT.exec(value)
  const ms = parts !== null && isCalendarDay(Number(parts[1]), Number(parts[2]), Number(parts[3])) ? Date.parse(value) : NaN
  if (Number.isNaN(ms)) throw new FieldError(`${field}: must be an ISO 8601 time or Unix seconds (got ${JSON.stringify(value).slice(0, 60)})`)
  return ms
}

/**
 * POST /realtime/disconnect and /realtime/revoke (docs/protocol.md, "Disconnect and revoke"):
 * admins and services take users off the air on every instance.
 */
const controlRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const ttlMs = app.config.REVOCATION_TTL_SECONDS * 1000
  const errors = { 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 413: ErrorReply, 415: ErrorReply, 429: ErrorReply, 503: ErrorReply }

  app.post('/realtime/disconnect', {
    onRequest: app.requireServiceOrAdmin,
    schema: {
      summary: 'Close every connection of these users, on every instance (they may connect again)',
      tags: ['control'],
      security: [{ bearerAuth: [] }],
      body: DisconnectBody,
      response: { 202: Type.Object({ userIds: Type.Array(Type.String()) }), ...errors }
    }
  }, async (request, reply) => {
    const { userId, userIds = [], reason } = request.body
    const ids = [...new Set([...userIds, ...(userId === undefined ? [] : [userId])].map(String))]
    if (ids.length === 0) throw new FieldError('userId: userId or userIds is required')
    await app.disconnectUsers(ids, reason ?? 'disconnected')
    return await reply.code(202).send({ userIds: ids })
  })

  app.post('/realtime/revoke', {
    onRequest: app.requireServiceOrAdmin,
    schema: {
      summary: 'Refuse a user\'s tokens issued up to a moment, or one token by jti, on every instance; close what they authenticate',
      tags: ['control'],
      security: [{ bearerAuth: [] }],
      body: RevokeBody,
      response: {
        202: Type.Object({
          userId: Type.Optional(Type.String()),
          issuedBefore: Type.Optional(Type.String({ format: 'date-time' })),
          jti: Type.Optional(Type.String()),
          expiresAt: Type.Optional(Type.String({ format: 'date-time' }))
        }),
        ...errors
      }
    }
  }, async (request, reply) => {
    const { userId, issuedBefore, jti, expiresAt, reason } = request.body
    const now = Date.now()
    let revocation: Revocation
    if (userId !== undefined) {
      if (jti !== undefined) throw new FieldError('jti: give userId or jti, not both')
      if (expiresAt !== undefined) throw new FieldError('expiresAt: goes with jti; a user\'s revocation lasts REVOCATION_TTL_SECONDS')
      const before = issuedBefore === undefined ? now : momentOf(issuedBefore, 'issuedBefore')
      revocation = { kind: 'user', userId: String(userId), issuedBefore: Math.floor(before / 1000), until: now + ttlMs }
    } else if (jti !== undefined) {
      if (issuedBefore !== undefined) throw new FieldError('issuedBefore: goes with userId')
      const until = expiresAt === undefined ? now + ttlMs : momentOf(expiresAt, 'expiresAt')
      revocation = { kind: 'jti', jti, until: Math.min(until, now + ttlMs) }
    } else {
      throw new FieldError('userId: userId or jti is required')
    }
    await app.revoke(revocation, reason ?? 'token revoked')
    return await reply.code(202).send(revocation.kind === 'user'
      ? { userId: revocation.userId, issuedBefore: new Date(revocation.issuedBefore * 1000).toISOString() }
      : { jti: revocation.jti, expiresAt: new Date(revocation.until).toISOString() })
  })
}

export default controlRoutes
