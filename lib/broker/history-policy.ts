import { CHANNEL_ALPHABET } from '../auth/channels.js'

/**
 * How much history each kind of channel keeps (HISTORY_POLICY): a user's own channel may
 * keep a day of notifications while a product channel keeps only its latest state.
 * Entries are channel-name prefixes; the longest prefix that matches wins, and channels no
 * prefix matches keep the defaults (HISTORY_SIZE, HISTORY_TTL_SECONDS).
 */
export interface ChannelHistory {
  /** Events kept (0: none). */
  size: number
  /** For how long after the channel's last publish. */
  ttlSeconds: number
}

export interface PolicyEntry extends ChannelHistory {
  prefix: string
}

export const MAX_HISTORY_SIZE = 100_000
export const MAX_HISTORY_TTL_SECONDS = 86_400 * 30

export class HistoryPolicy {
  /** Longest prefix first, so the first match is the longest. */
  private readonly entries: readonly PolicyEntry[]
  /** The largest size any channel keeps: the most `rewind` and the history route's `limit` may ask. */
  readonly maxSize: number

  constructor (readonly defaults: ChannelHistory, entries: readonly PolicyEntry[] = []) {
    this.entries = [...entries].sort((a, b) => b.prefix.length - a.prefix.length)
    this.maxSize = Math.max(defaults.size, ...entries.map((e) => e.size))
  }

  of (channel: string): ChannelHistory {
    for (const entry of this.entries) if (channel.startsWith(entry.prefix)) return entry
    return this.defaults
  }
}

/** `prefix=size/ttlSeconds`, the prefix being the start of a channel name (docs/protocol.md, Channels). */
const POLICY_ENTRY = new RegExp(`^([${CHANNEL_ALPHABET}]{1,200})=(\\d{1,6})/(\\d{1,8})$`)

/**
 * Parses `prefix=size/ttlSeconds,…` (e.g. `user:=1000/86400,product:=1/86400`). Throws an
 * Error whose message says what is wrong with which entry.
 */
export function parseHistoryPolicy (text: string): PolicyEntry[] {
  const entries: PolicyEntry[] = []
  for (const raw of text.split(',').map((e) => e.trim()).filter((e) => e !== '')) {
    const match = POLICY_ENTRY.exec(raw)
    if (match === null) throw new Error(`entry ${JSON.stringify(raw)} is not prefix=size/ttlSeconds`)
    const [, prefix, size, ttl] = match
    const entry = { prefix, size: Number(size), ttlSeconds: Number(ttl) }
    if (entry.size > MAX_HISTORY_SIZE) throw new Error(`entry ${JSON.stringify(raw)}: size must be at most ${MAX_HISTORY_SIZE}`)
    if (entry.ttlSeconds < 1 || entry.ttlSeconds > MAX_HISTORY_TTL_SECONDS) {
      throw new Error(`entry ${JSON.stringify(raw)}: ttlSeconds must be 1 to ${MAX_HISTORY_TTL_SECONDS}`)
    }
    if (entries.some((e) => e.prefix === prefix)) throw new Error(`prefix ${JSON.stringify(prefix)} appears twice`)
    entries.push(entry)
  }
  return entries
}
