/**
 * The channels one connection holds, each with the offset after which every event of the
 * channel has been sent to it: `[channel, offset, channel, offset, …]`.
 *
 * A flat array of exactly that length, rebuilt when a channel is joined or left (rare
 * next to deliveries, which never read it): a Map per connection was the largest part of
 * the hub's idle memory per connection (184 B for one or two channels, against 48–64 B).
 * Lookups are linear, over at most the per-connection channel limit.
 */
export type HeldChannels = Array<string | number>

/** Held by a connection before its first join: shared, never written (nothing to set in it). */
export const NO_CHANNELS: HeldChannels = Object.freeze([]) as unknown as HeldChannels

function indexOf (held: HeldChannels, channel: string): number {
  for (let i = 0; i < held.length; i += 2) if (held[i] === channel) return i
  return -1
}

export const heldCount = (held: HeldChannels): number => held.length / 2

export const holds = (held: HeldChannels, channel: string): boolean => indexOf(held, channel) !== -1

/** The offset after which everything of `channel` went out; undefined when not held. */
export function sentAfter (held: HeldChannels, channel: string): number | undefined {
  const i = indexOf(held, channel)
  return i === -1 ? undefined : held[i + 1] as number
}

/** Records a held channel's offset in place; nothing when the channel is not held. */
export function setSentAfter (held: HeldChannels, channel: string, offset: number): void {
  const i = indexOf(held, channel)
  if (i !== -1) held[i + 1] = offset
}

/** A copy that holds `channel` too (concat sizes it exactly; push would leave slack). */
export function withChannel (held: HeldChannels, channel: string, offset: number): HeldChannels {
  return holds(held, channel) ? held : held.concat([channel, offset])
}

/** A copy without `channel`; the same array when it was not held. */
export function withoutChannel (held: HeldChannels, channel: string): HeldChannels {
  const i = indexOf(held, channel)
  if (i === -1) return held
  if (held.length === 2) return NO_CHANNELS
  return held.slice(0, i).concat(held.slice(i + 2))
}

export function channelNames (held: HeldChannels): string[] {
  const names: string[] = []
  for (let i = 0; i < held.length; i += 2) names.push(held[i] as string)
  return names
}
