/** Who is on the other end of a connection or request, as read from a verified JWT. */
export interface Identity {
  /** `sub` of the token; null for an anonymous connection. */
  readonly userId: string | null
  readonly roles: readonly string[]
  /** Token expiry in epoch seconds, when the token has one. */
  readonly exp?: number
}

/** Shared by every identity without roles: an empty array per connection adds up. */
const NO_ROLES: readonly string[] = Object.freeze([])

export const ANONYMOUS: Identity = Object.freeze({ userId: null, roles: NO_ROLES })

export const ROLE_ADMIN = 'admin'
export const ROLE_SERVICE = 'service'

/** Builds an identity from verified claims: roles come from `roles` (array) or `role` (string). */
export function identityFromClaims (claims: Record<string, unknown>): Identity {
  const roles = new Set<string>()
  if (Array.isArray(claims.roles)) {
    for (const r of claims.roles) if (typeof r === 'string' && r !== '') roles.add(r)
  }
  if (typeof claims.role === 'string' && claims.role !== '') roles.add(claims.role)
  const sub = claims.sub
  const userId = typeof sub === 'string' && sub !== '' ? sub : typeof sub === 'number' ? String(sub) : null
  const exp = typeof claims.exp === 'number' ? claims.exp : undefined
  return { userId, roles: roles.size === 0 ? NO_ROLES : [...roles], exp }
}

export const isAdmin = (identity: Identity): boolean => identity.roles.includes(ROLE_ADMIN)
export const canPublish = (identity: Identity): boolean =>
  identity.roles.includes(ROLE_SERVICE) || identity.roles.includes(ROLE_ADMIN)
