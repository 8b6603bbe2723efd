export type Handler = (value: any) => void

/** Named handlers; a throwing handler is reported and does not stop the others. */
export class Emitter {
  private readonly handlers = new Map<string, Set<Handler>>()

  on (type: string, handler: Handler): () => void {
    let set = this.handlers.get(type)
    if (set === undefined) this.handlers.set(type, (set = new Set()))
    set.add(handler)
    return () => { set?.delete(handler) }
  }

  off (type: string, handler: Handler): void {
    this.handlers.get(type)?.delete(handler)
  }

  emit (type: string, value: unknown): void {
    const set = this.handlers.get(type)
    if (set === undefined) return
    for (const handler of [...set]) {
      try {
        handler(value)
      } catch (err) {
        // An app handler's bug must not break delivery to the others or the connection.
        if (typeof (globalThis as any).reportError === 'function') (globalThis as any).reportError(err)
        else console.error(err)
      }
    }
  }
}
