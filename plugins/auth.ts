import fastifyJwt from '@fastify/jwt'
import createError from '@fastify/error'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { CLOCK_TOLERANCE_MS, Expiries } from '../lib/auth/expiry.js'
import { allowedOrigins, listOf } from '../lib/ops/config.js'
import { ANONYMOUS, canPublish, type Identity, identityFromClaims, isAdmin } from '../lib/auth/identity.js'
import { RevocationList } from '../lib/auth/revocations.js'
import { VerifiedTokenCache } from '../lib/auth/token-cache.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Verifies a JWT (signature, `exp` with 1 s leeway, not revoked) and returns who it names. */
    verifyToken(token: string): Identity
    /** The revoked tokens this instance knows (kept current by plugins/control.ts). */
    revocations: RevocationList
    /** This app's token expiries (lib/auth/expiry.ts): connections end when their token does. */
    expiries: Expiries
    /** onRequest hook for /ws and /sse: a browser Origin outside WS_ALLOWED_ORIGINS is refused with 403. */
    checkOrigin(request: FastifyRequest, reply: FastifyReply): Promise<void>
    /** onRequest hook: a valid token is required. */
    authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void>
    /** onRequest hook for /ws and /sse: a valid token, or none when ALLOW_ANONYMOUS. */
    authenticateClient(request: FastifyRequest, reply: FastifyReply): Promise<void>
    /** onRequest hooks that also demand a role. */
    requireAdmin(request: FastifyRequest, reply: FastifyReply): Promise<void>
    /** Publishing and stats: role service or admin. */
    requireServiceOrAdmin(request: FastifyRequest, reply: FastifyReply): Promise<void>
  }
  interface FastifyRequest {
    /**
     * Who sent the request: set by the auth hooks, null on routes that have none. Routes
     * behind a hook read it through `requireIdentity` (lib/auth/identity.ts).
     */
    identity: Identity | null
  }
}

export const UnauthorizedError = createError('GW_UNAUTHORIZED', '%s', 401)
/** A token that verifies but was revoked (lib/auth/revocations.ts): 401, and `forbidden` for auth:refresh. */
class RevokedTokenError extends Error {}
export const ForbiddenError = createError('GW_FORBIDDEN', '%s', 403)

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'] as const

/** The token of a request: `Authorization: Bearer` first, else the `token` query parameter. */
function tokenOf (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (typeof header === 'string' && /^Bearer\s+/i.test(header)) return header.replace(/^Bearer\s+/i, '').trim()
  const query = request.query as Record<string, unknown> | undefined
  const token = query?.token
  return typeof token === 'string' && token !== '' ? token : undefined
}

export default fp(async (app) => {
  const { JWT_SECRET, JWT_PUBLIC_KEY, ALLOW_ANONYMOUS } = app.config
  // Optional: tokens must name one of these issuers / audiences (JWT_ISSUER, JWT_AUDIENCE).
  const issuers = listOf(app.config.JWT_ISSUER)
  const audiences = listOf(app.config.JWT_AUDIENCE)
  const claimRules = {
    clockTolerance: CLOCK_TOLERANCE_MS,
    ...(issuers.length > 0 ? { allowedIss: issuers } : {}),
    ...(audiences.length > 0 ? { allowedAud: audiences } : {}),
    // fast-jwt checks iss/aud only when present; configured, they are required.
    requiredClaims: [...(issuers.length > 0 ? ['iss'] : []), ...(audiences.length > 0 ? ['aud'] : [])]
  }
  if (JWT_PUBLIC_KEY !== undefined) {
    if (JWT_SECRET !== undefined) {
      app.log.warn('JWT_SECRET and JWT_PUBLIC_KEY are both set: tokens are verified with JWT_PUBLIC_KEY only, and HS256 tokens are refused')
    }
    await app.register(fastifyJwt, {
      secret: { public: JWT_PUBLIC_KEY, private: '' },
      verify: { algorithms: [...ASYMMETRIC], ...claimRules }
    })
  } else if (JWT_SECRET !== undefined) {
    await app.register(fastifyJwt, {
      secret: JWT_SECRET,
      sign: { algorithm: 'HS256' },
      verify: { algorithms: ['HS256'], ...claimRules }
    })
  } else {
    throw new Error('JWT_SECRET or JWT_PUBLIC_KEY must be set (server.ts makes one outside production)')
  }

  const revocations = new RevocationList()
  // One entry per connection the instance may hold: a storm of reconnects finds every token.
  const verified = new VerifiedTokenCache(app.config.MAX_CONNECTIONS)

  function verifyToken (token: string): Identity {
    let identity = verified.get(token)
    if (identity === undefined) {
      identity = identityFromClaims(app.jwt.verify<Record<string, unknown>>(token))
      verified.set(token, identity)
    }
    if (revocations.isRevoked(identity)) throw new RevokedTokenError('token revoked')
    return identity
  }

  function identify (request: FastifyRequest, allowAnonymous: boolean): Identity {
    const token = tokenOf(request)
    if (token === undefined) {
      if (allowAnonymous) return ANONYMOUS
      throw new UnauthorizedError('a token is required (Authorization: Bearer <jwt> or ?token=)')
    }
    try {
      return verifyToken(token)
    } catch (err) {
      const expired = (err as { code?: string }).code === 'FAST_JWT_EXPIRED'
      throw new UnauthorizedError(err instanceof RevokedTokenError ? 'token revoked' : expired ? 'token expired' : 'token is invalid')
    }
  }

  const requireRole = (allowed: (identity: Identity) => boolean, what: string) =>
    async (request: FastifyRequest): Promise<void> => {
      const identity = identify(request, false)
      request.identity = identity
      if (!allowed(identity)) throw new ForbiddenError(`${what} required`)
    }

  // Browsers send Origin on WebSocket upgrades and EventSource requests; clients that are
  // not browsers send none and pass (they could send any Origin anyway).
  const origins = allowedOrigins(app.config)
  async function checkOrigin (request: FastifyRequest): Promise<void> {
    const origin = request.headers.origin
    if (origins === '*' || origin === undefined || origins.has(origin)) return
    app.gatewayMetrics.refusedOrigins.inc({ transport: request.url.startsWith('/sse') ? 'sse' : 'ws' })
    throw new ForbiddenError('origin not allowed (WS_ALLOWED_ORIGINS)')
  }

  app.decorateRequest('identity', null)
  app.decorate('verifyToken', verifyToken)
  app.decorate('revocations', revocations)
  const expiries = new Expiries()
  app.decorate('expiries', expiries)
  app.addHook('onClose', async () => { expiries.close() })
  app.decorate('checkOrigin', checkOrigin)
  app.decorate('authenticate', async (request: FastifyRequest) => { request.identity = identify(request, false) })
  app.decorate('authenticateClient', async (request: FastifyRequest) => {
    const identity = identify(request, ALLOW_ANONYMOUS)
    // A connection with no user is counted by its client's address (lib/hub/admission.ts).
    request.identity = identity.userId === null ? { ...identity, clientIp: request.ip } : identity
  })
  app.decorate('requireAdmin', requireRole(isAdmin, 'role admin'))
  app.decorate('requireServiceOrAdmin', requireRole(canPublish, 'role service or admin'))
}, { name: 'auth', dependencies: ['config', 'metrics'] })
