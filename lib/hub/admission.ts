import type { Identity } from '../auth/identity.js'
import type { Hub } from './hub.js'

/**
 * Whether a new connection may open (WebSocket and SSE alike: one policy, one set of
 * reasons). The reasons are stable snake_case words: they label the refused-connections
 * metric and the close reason.
 */
export type RefusalReason = 'shutting_down' | 'instance_limit' | 'user_limit' | 'address_limit'

export interface AdmissionLimits {
  /** Connections on this instance (MAX_CONNECTIONS). */
  maxConnections: number
  /** Connections per user on this instance, and per client address for connections with no user (MAX_CONNECTIONS_PER_USER). */
  maxPerUser: number
}

/** Why `identity` may not open one more connection on `hub`, or null when it may. */
export function refusalFor (hub: Hub, identity: Identity, limits: AdmissionLimits): RefusalReason | null {
  if (hub.isShuttingDown) return 'shutting_down'
  if (hub.connectionCount() >= limits.maxConnections) return 'instance_limit'
  if (identity.userId !== null) {
    return hub.userConnectionCount(identity.userId) >= limits.maxPerUser ? 'user_limit' : null
  }
  // No user to count by (anonymous, or a token without sub): one client must not take every slot.
  if (identity.clientIp !== undefined && hub.addressConnectionCount(identity.clientIp) >= limits.maxPerUser) return 'address_limit'
  return null
}

/** What the client is told, per reason. */
export const REFUSAL_MESSAGES: Record<RefusalReason, string> = {
  shutting_down: 'server restarting',
  instance_limit: 'instance connection limit reached',
  user_limit: 'too many connections for this user',
  address_limit: 'too many connections without a user from this address'
}
