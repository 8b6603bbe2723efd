import { Type } from '@sinclair/typebox'
import { type Identity, isAdmin } from './identity.js'

/** docs/protocol.md, Channels: 1–200 characters of [A-Za-z0-9_\-:.@]. */
const CHANNEL_NAME = /^[A-Za-z0-9_\-:.@]{1,200}$/

/** The same rule as a schema, for every frame and body that names a channel. */
export const ChannelName = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_\\-:.@]+$' })

export const ADMIN_CHANNEL = 'admin'
export const ORDERS_CHANNEL = 'orders'
export const INVENTORY_CHANNEL = 'inventory'
export const PRODUCTS_CHANNEL = 'products'

export const userChannel = (userId: string): string => `user:${userId}`
export const productChannel = (productId: string | number): string => `product:${productId}`

export function isValidChannelName (name: unknown): boolean {
  return typeof name === 'string' && CHANNEL_NAME.test(name)
}

const PUBLIC_EXACT = new Set([INVENTORY_CHANNEL, PRODUCTS_CHANNEL])
const PUBLIC_PREFIXES = ['product:', 'event:', 'room:']

/**
 * Whether `identity` may read `channel` (docs/protocol.md, Channels). Channels outside the table are
 * refused: a new namespace is opened here on purpose, not by accident.
 * Assumes the name is valid (see isValidChannelName).
 */
export function canSubscribe (identity: Identity, channel: string): boolean {
  if (channel.startsWith('user:')) {
    return identity.userId !== null && channel === userChannel(identity.userId)
  }
  if (channel === ADMIN_CHANNEL || channel === ORDERS_CHANNEL) return isAdmin(identity)
  if (PUBLIC_EXACT.has(channel)) return true
  return PUBLIC_PREFIXES.some((p) => channel.length > p.length && channel.startsWith(p))
}

/** The channels every connection of this identity holds from the start. */
export function defaultChannels (identity: Identity): string[] {
  return identity.userId === null ? [] : [userChannel(identity.userId)]
}
