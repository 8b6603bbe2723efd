/**
 * A map that empties itself at the end of the turn of the event loop it was filled in
 * (setImmediate). For work that many callers of one turn repeat on the same input (the
 * resumes of a reconnect storm replaying the same recent events of a channel): each does it
 * once, and nothing is kept beyond the turn, so it costs no memory between turns.
 */
export class TurnMemo<K, V> {
  private readonly entries = new Map<K, V>()
  private clearing = false

  get (key: K): V | undefined {
    return this.entries.get(key)
  }

  set (key: K, value: V): void {
    this.entries.set(key, value)
    if (this.clearing) return
    this.clearing = true
    setImmediate(this.clear)
  }

  get size (): number {
    return this.entries.size
  }

  private readonly clear = (): void => {
    this.entries.clear()
    this.clearing = false
  }
}
