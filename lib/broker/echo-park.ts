/**
 * Holds a channel's pub/sub entries back while a publish of this instance to that channel
 * awaits its reply (issue 18, the Redis drain's profile). Redis writes a script's PUBLISHes
 * before its reply, so the copies of this instance's own events usually arrive first; taken
 * then, each is JSON-decoded and sequenced although the reply delivers the same event a
 * moment later (RedisBroker.deliverOwn). Parked instead, they are handed back in arrival
 * (pub/sub) order once the reply has been delivered, when the own ones are recognised by
 * their `epoch,offset,` prefix and dropped undecoded, and the others (another instance's
 * events) go on exactly as they would have, only a round trip later.
 *
 * Every settle hands back everything parked on its channels, even while another publish
 * to them is still in flight: nothing waits longer than one reply (or the command timeout
 * when Redis does not answer), so a channel published to without pause never starves
 * another instance's events.
 */
export class EchoPark {
  /** Own publishes awaiting their reply, per channel. */
  private readonly inFlight = new Map<string, number>()
  /** Entries held back, per channel, in arrival order. */
  private readonly parked = new Map<string, string[]>()

  constructor (private readonly release: (channel: string, entry: string) => void) {}

  /** A publish to these channels is about to be sent. */
  expect (channels: Iterable<string>): void {
    for (const channel of channels) this.inFlight.set(channel, (this.inFlight.get(channel) ?? 0) + 1)
  }

  /** Keeps the entry if a publish to its channel is in flight; false: take it now. */
  park (channel: string, entry: string): boolean {
    if (!this.inFlight.has(channel)) return false
    const entries = this.parked.get(channel)
    if (entries === undefined) this.parked.set(channel, [entry])
    else entries.push(entry)
    return true
  }

  /** The publish to these channels has its reply (delivered) or failed: hand back what waited. */
  settle (channels: Iterable<string>): void {
    for (const channel of channels) {
      const left = (this.inFlight.get(channel) ?? 1) - 1
      if (left > 0) this.inFlight.set(channel, left)
      else this.inFlight.delete(channel)
      const entries = this.parked.get(channel)
      if (entries === undefined) continue
      this.parked.delete(channel)
      for (const entry of entries) this.release(channel, entry)
    }
  }

  /** Entries waiting now (for tests and debugging). */
  get size (): number {
    let n = 0
    for (const entries of this.parked.values()) n += entries.length
    return n
  }
}
