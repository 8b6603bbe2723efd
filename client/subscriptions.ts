import type { RealtimeEvent } from './options.js'
import { type Position, Positions } from './positions.js'

/** Events of a channel skipped without a `system:reset`: after `after`, the next shown was `next`. */
export interface Gap {
  after: number
  next: number
}

interface Acknowledgement {
  positions?: Record<string, Position>
  recovered?: Record<string, boolean>
}

/**
 * What the client is subscribed to and where it stands in each channel: the channels
 * the app asked for, the ones the server adds (the user's own), the last position of
 * each, and the live events held back while their channel is resumed.
 *
 * Resuming a channel the server joined at connect (the user's own) goes: live events
 * arrive from the greeting on and are held; the `subscribed` ack follows, then the replay
 * of what was missed. When the server had sent a live event before the resume, the replay
 * comes after a `system:reset` to the position resumed from and repeats it (offsets never
 * go backwards unannounced): what was held is dropped and comes again, in order. When it
 * had not, the replay stops just before the held events, which are shown then. Either way
 * the app sees every event once, in offset order, and no reload.
 */
export class Subscriptions {
  readonly positions = new Positions()
  /** Channels the app asked for. */
  readonly desired: Set<string>
  /** Channels the server subscribed by itself (the user's own), from the greeting. */
  defaults: string[] = []
  /** How many past events the app asked for per channel, until the channel has a position. */
  private readonly rewinds = new Map<string, number>()
  /** Live events held per channel being resumed, oldest first. */
  private readonly held = new Map<string, RealtimeEvent[]>()
  /** Channels acknowledged and replaying: release what is held once this offset is seen. */
  private readonly releaseAt = new Map<string, number>()
  /** After a reset to before what the app was shown: events up to this offset come again, and are not shown twice. */
  private readonly shownThrough = new Map<string, number>()
  /** Offsets skipped since the last takeGaps, per channel (the first skip). */
  private readonly gaps = new Map<string, Gap>()

  constructor (channels: readonly string[]) {
    this.desired = new Set(channels)
  }

  /** Adds channels (each to start with its last `rewind` events); returns the ones that were new. */
  add (channels: readonly string[], rewind?: number): string[] {
    const fresh = channels.filter((c) => !this.desired.has(c))
    for (const c of fresh) {
      this.desired.add(c)
      if (rewind !== undefined) this.rewinds.set(c, rewind)
    }
    return fresh
  }

  /**
   * The rewind a channel starts with: only while it has no position. Once the client has
   * one, a reconnect resumes from it (`since`, the SSE cursor) instead.
   */
  rewindOf (channel: string): number | undefined {
    if (this.positions.get(channel) !== undefined) this.rewinds.delete(channel)
    return this.rewinds.get(channel)
  }

  /** Removes channels and forgets where they stood (a later subscribe starts live). */
  remove (channels: readonly string[]): string[] {
    const gone = channels.filter((c) => this.desired.delete(c))
    for (const c of gone) {
      this.positions.forget(c)
      this.rewinds.delete(c)
    }
    return gone
  }

  all (): string[] {
    return [...new Set([...this.defaults, ...this.desired])]
  }

  /** The app's channels the server did not subscribe by itself. */
  extra (): string[] {
    return [...this.desired].filter((c) => !this.defaults.includes(c))
  }

  /** Default channels with a known position: the ones a reconnect resumes. */
  resumable (): string[] {
    return this.defaults.filter((c) => this.positions.get(c) !== undefined)
  }

  /** Starts holding the channels' live events: they are about to be resumed. */
  hold (channels: readonly string[]): void {
    for (const c of channels) this.held.set(c, [])
  }

  /**
   * The resume request failed or was never answered: what is held goes out as it is, and
   * offsets it skips are a gap (takeGaps) the app must hear of.
   */
  releaseUnacknowledged (channels: readonly string[]): RealtimeEvent[] {
    return channels.filter((c) => !this.releaseAt.has(c)).flatMap((c) => this.release(c, true))
  }

  /**
   * The gaps found since the last call, oldest first. The server never skips an offset
   * without a `system:reset` or `recovered: false` (docs/protocol.md); this is the client's
   * own check of that promise, so a gap from anywhere (a fault, a proxy, a bug) is never silent.
   */
  takeGaps (): Array<[string, Gap]> {
    if (this.gaps.size === 0) return []
    const gaps = [...this.gaps]
    this.gaps.clear()
    return gaps
  }

  /** The connection is gone: held events were never shown, so the next resume fetches them. */
  reset (): void {
    this.held.clear()
    this.releaseAt.clear()
    this.shownThrough.clear()
  }

  /**
   * Takes an event in; returns the events to show now, in order: none while its channel
   * is held, the event and then what was held once the replay has caught up with it.
   */
  accept (event: RealtimeEvent): RealtimeEvent[] {
    // An event of a channel the app left, sent before the server took the unsubscribe: not
    // shown, and no position made of it (review: a later subscribe then counted a gap, or
    // resumed from it with no epoch and dropped its rewind).
    if (!this.desired.has(event.channel) && !this.defaults.includes(event.channel)) return []
    const through = this.shownThrough.get(event.channel)
    if (through !== undefined) {
      if (event.offset <= through) return []
      this.shownThrough.delete(event.channel)
    }
    const held = this.held.get(event.channel)
    if (held !== undefined && !this.releaseAt.has(event.channel)) {
      held.push(event)
      return []
    }
    this.checkFollows(event)
    this.positions.sawEvent(event.channel, event.offset)
    const target = this.releaseAt.get(event.channel)
    return target !== undefined && event.offset >= target ? [event, ...this.release(event.channel)] : [event]
  }

  /**
   * A `system:reset` of the channel. In the epoch the client follows and at or before where
   * it stands, nothing was lost: the server sends everything after that position again (the
   * resume of a channel it had sent live events of, above), so what is held is dropped, it
   * comes again in order, and what was shown is not shown twice: true. Otherwise the
   * channel counts on from the position and the app has to reload it: false.
   */
  resetTo (channel: string, position: Position): boolean {
    const known = this.positions.get(channel)
    if (known?.epoch !== undefined && known.epoch === position.epoch && position.offset <= known.offset) {
      this.held.delete(channel)
      this.releaseAt.delete(channel)
      if (known.offset > position.offset) this.shownThrough.set(channel, known.offset)
      return true
    }
    this.shownThrough.delete(channel)
    this.positions.set(channel, position)
    return false
  }

  /**
   * Held events after the position, in order. `checked`: where nothing announced a loss
   * (acknowledged's `recovered: false` does), a skip before them is a gap.
   */
  private release (channel: string, checked = false): RealtimeEvent[] {
    const held = this.held.get(channel) ?? []
    this.held.delete(channel)
    this.releaseAt.delete(channel)
    const known = this.positions.get(channel)?.offset ?? 0
    const fresh = held.filter((e) => e.offset > known)
    if (checked && fresh.length > 0) this.checkFollows(fresh[0])
    for (const e of fresh) this.positions.sawEvent(e.channel, e.offset)
    return fresh
  }

  /** Notes a gap when the event does not follow the channel's last offset (a channel with no position yet has none). */
  private checkFollows (event: RealtimeEvent): void {
    const known = this.positions.get(event.channel)
    if (known === undefined || event.offset <= known.offset + 1) return
    if (!this.gaps.has(event.channel)) this.gaps.set(event.channel, { after: known.offset, next: event.offset })
  }

  /**
   * A `subscribed` acknowledgement for a subscribe sent with `since`: learns each
   * channel's epoch (and, where it starts live, its position). Returns the channels the
   * server could not recover, which are then followed from the live edge, and the held
   * events that can be shown at once.
   */
  acknowledged (ack: Acknowledgement | undefined, since: Record<string, Position> = {}): { lost: string[], ready: RealtimeEvent[] } {
    const lost: string[] = []
    const ready: RealtimeEvent[] = []
    for (const [channel, position] of Object.entries(ack?.positions ?? {})) {
      const recovered = ack?.recovered?.[channel]
      const held = this.held.get(channel)
      if (held !== undefined) {
        // The replay ends just before the first held event; nothing to wait for when the
        // client already saw that far, or nothing will be replayed.
        const target = held.length === 0 ? 0 : held[0].offset - 1
        const seen = this.positions.get(channel)?.offset ?? 0
        if (recovered === false || seen >= target) ready.push(...this.release(channel))
        else this.releaseAt.set(channel, target)
      }
      if (since[channel] !== undefined && recovered === false) lost.push(channel)
      if (this.positions.get(channel) === undefined || recovered === false) this.positions.set(channel, position)
      else if (position.epoch !== undefined) this.positions.setEpoch(channel, position.epoch)
    }
    return { lost, ready }
  }
}
