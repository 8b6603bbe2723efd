/** Who is on the other end of a connection or request, as read from a verified JWT. */
export interface Identity {
  /** `sub` of the token; null for an anonymous connection. */
  readonly userId: string | null
  readonly roles: readonly string[]
  /** Token expiry in epoch seconds, when the token has one. */
  readonly exp?: number
  /** When the token was issued (epoch seconds) and its id: what a revocation names (lib/auth/revocations.ts). */
  readonly iat?: number
  readonly jti?: string
  /**
   * For a connection with no user (anonymous, or a token without `sub`): the client's
   * address, by which such connections are counted against MAX_CONNECTIONS_PER_USER.
   */
  readonly clientIp?: string
}

/** Shared by every identity without roles: an empty array per connection adds up. */
const NO_ROLES: readonly string[] = Object.freeze([])

export const ANONYMOUS: Identity = Object.freeze({ userId: null, roles: NO_ROLES })

export const ROLE_ADMIN = 'admin'
export const ROLE_SERVICE = 'service'

/** Claims that verify but cannot name anyone safely: the token is refused like an invalid one. */
export class InvalidClaimsError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidClaimsError'
  }
}

/** Builds an identity from verified claims: roles come from `roles` (array) or `role` (string). */
export function identityFromClaims (claims: Record<string, unknown>): Identity {
  const roles = new Set<string>()
  if (Array.isArray(claims.roles)) {
    for (const r of claims.roles) if (typeof r === 'string' && r !== '') roles.add(r)
  }
  if (typeof claims.role === 'string' && claims.role !== '') roles.add(claims.role)
  const sub = claims.sub
  if (sub !== undefined && typeof sub !== 'string' && typeof sub !== 'number') {
    // `true`, `{}`, `null`: not a user id (RFC 7519: a string), and not the absence of one either.
    throw new InvalidClaimsError('sub must be a string (or an integer)')
  }
  if (typeof sub === 'number' && !Number.isSafeInteger(sub)) {
    // Beyond ±(2^53-1) the number was already rounded when the JSON was read: it may name another user.
    throw new InvalidClaimsError('sub is a number that cannot be carried exactly (use a string)')
  }
  const userId = typeof sub === 'string' && sub !== '' ? sub : typeof sub === 'number' ? String(sub) : null
  const exp = typeof claims.exp === 'number' ? claims.exp : undefined
  const identity: { userId: string | null, roles: readonly string[], exp?: number, iat?: number, jti?: string } =
    { userId, roles: roles.size === 0 ? NO_ROLES : [...roles], exp }
  // Only when present: most tokens carry no jti, and a field per connection is memory per connection.
  if (typeof claims.iat === 'number') identity.iat = claims.iat
  if (typeof claims.jti === 'string' && claims.jti !== '') identity.jti = claims.jti
  // Frozen: a verified token's identity is shared by every use of that token
  // (lib/auth/token-cache.ts), so no caller may change what another one sees.
  Object.freeze(identity.roles)
  return Object.freeze(identity)
}

/**
 * The identity an authentication step set, for code that runs only after one (an HTTP
 * route behind an auth hook). None is a wiring error, so it throws rather than letting
 * the request through as anyone.
 */
export function requireIdentity (identity: Identity | null): Identity {
  if (identity === null) throw new Error('no identity: this route runs without an authentication hook')
  return identity
}

export const isAdmin = (identity: Identity): boolean => identity.roles.includes(ROLE_ADMIN)
/** Services read any channel's history (docs/protocol.md, "History over HTTP"); admins read what they may subscribe to. */
export const isService = (identity: Identity): boolean => identity.roles.includes(ROLE_SERVICE)
export const canPublish = (identity: Identity): boolean =>
  identity.roles.includes(ROLE_SERVICE) || identity.roles.includes(ROLE_ADMIN)
