import type { PresenceCounts, PresenceShare } from '../core/presence.js'

/**
 * One channel's presence counts, kept current as local connections join and leave and as
 * other instances' shares change, so reading them is O(1): the first presence frame of each
 * of 10k clients joining a channel at once must not walk the other subscribers (that was
 * O(n²), measured in bench/README.md "Feature costs"). Users are counted once over every
 * instance: `overlap` tracks the users that are both local and in some other share.
 */
export class PresenceTally {
  /** Local connections holding the channel. */
  private connections = 0
  /** Local signed-in users → their connections on the channel. */
  private readonly local = new Map<string, number>()
  /** Users of other instances' shares → how many shares name them. */
  private readonly remote = new Map<string, number>()
  private remoteConnections = 0
  private overlap = 0

  join (userId: string | null): void {
    this.connections++
    if (userId === null) return
    const n = this.local.get(userId) ?? 0
    this.local.set(userId, n + 1)
    if (n === 0 && this.remote.has(userId)) this.overlap++
  }

  leave (userId: string | null): void {
    if (this.connections > 0) this.connections--
    if (userId === null) return
    const n = this.local.get(userId)
    if (n === undefined) return
    if (n > 1) {
      this.local.set(userId, n - 1)
      return
    }
    this.local.delete(userId)
    if (this.remote.has(userId)) this.overlap--
  }

  addShare (share: PresenceShare): void {
    this.remoteConnections += share.connections
    for (const userId of share.userIds) {
      const n = this.remote.get(userId) ?? 0
      this.remote.set(userId, n + 1)
      if (n === 0 && this.local.has(userId)) this.overlap++
    }
  }

  removeShare (share: PresenceShare): void {
    this.remoteConnections -= share.connections
    for (const userId of share.userIds) {
      const n = this.remote.get(userId)
      if (n === undefined) continue
      if (n > 1) {
        this.remote.set(userId, n - 1)
        continue
      }
      this.remote.delete(userId)
      if (this.local.has(userId)) this.overlap--
    }
  }

  /** Connections and distinct users over every instance. */
  counts (): PresenceCounts {
    return { connections: this.connections + this.remoteConnections, users: this.local.size + this.remote.size - this.overlap }
  }

  /** This instance's share, as it is written for the others (users sorted). */
  localShare (): PresenceShare {
    return { connections: this.connections, userIds: [...this.local.keys()].sort() }
  }
}
