/**
 * A map whose entries end `ttlMs` after they were set: the memory broker's idempotency keys.
 * Ended entries are never returned; `sweep` frees them (the broker calls it now and then),
 * so memory follows what was set within the TTL.
 */
export class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V, until: number }>()

  constructor (private readonly ttlMs: number) {}

  get (key: string, now = Date.now()): V | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.until > now) return entry.value
    this.entries.delete(key)
    return undefined
  }

  set (key: string, value: V, now = Date.now()): void {
    // Re-inserted, so the map stays in expiry order (sweep relies on it).
    this.entries.delete(key)
    this.entries.set(key, { value, until: now + this.ttlMs })
  }

  /** Drops ended entries. Insertion order is expiry order (one TTL), so it stops at the first live one. */
  sweep (now = Date.now()): void {
    for (const [key, entry] of this.entries) {
      if (entry.until > now) break
      this.entries.delete(key)
    }
  }

  get size (): number {
    return this.entries.size
  }
}
