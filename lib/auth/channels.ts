import { Type } from '@sinclair/typebox'
import { type Identity, isAdmin } from './identity.js'

/** docs/protocol.md, Channels: the characters a channel name is made of, as a regex class body. */
export const CHANNEL_ALPHABET = 'A-Za-z0-9_\\-:.@'

/** docs/protocol.md, Channels: 1–200 characters of the alphabet. */
const CHANNEL_NAME = new RegExp(`^[${CHANNEL_ALPHABET}]{1,200}$`)

/** The same rule as a schema, for every frame and body that names a channel. */
export const ChannelName = Type.String({ minLength: 1, maxLength: 200, pattern: `^[${CHANNEL_ALPHABET}]+$` })

export const ADMIN_CHANNEL = 'admin'
export const ORDERS_CHANNEL = 'orders'
export const INVENTORY_CHANNEL = 'inventory'
export const PRODUCTS_CHANNEL = 'products'

export const userChannel = (userId: string): string => `user:${userId}`
export const productChannel = (productId: string | number): string => `product:${productId}`

export function isValidChannelName (name: unknown): boolean {
  return typeof name === 'string' && CHANNEL_NAME.test(name)
}

/**
 * A comma-separated channel list (SSE's `channels`): none for an absent or blank one; spaces
 * around a name are dropped (they are outside the alphabet); an empty name (`a,,b`, a trailing
 * comma) or an invalid one makes the whole list bad, with a message that names it.
 */
export function parseChannelList (text: string | undefined): { ok: true, channels: string[] } | { ok: false, message: string } {
  const list = (text ?? '').trim()
  if (list === '') return { ok: true, channels: [] }
  const channels = list.split(',').map((c) => c.trim())
  const empty = channels.indexOf('')
  if (empty >= 0) return { ok: false, message: `channels: name ${empty + 1} of ${channels.length} is empty` }
  const bad = channels.find((c) => !isValidChannelName(c))
  if (bad !== undefined) return { ok: false, message: `invalid channel name: ${bad.slice(0, 200)}` }
  return { ok: true, channels }
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
