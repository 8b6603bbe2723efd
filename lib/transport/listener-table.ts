import type { EventEmitter } from 'node:events'

/**
 * Node's EventEmitter keeps its listeners in `_events`, an object created as
 * `{ __proto__: null }`, which V8 keeps in dictionary mode: a 256 B hash table once
 * four event names are in it (a socket's `error`, `message`, `pong`, `close`). Over
 * thousands of idle WebSockets that table was the largest thing the gateway kept per
 * connection beyond what bare `ws` keeps (bench/README.md).
 *
 * A table made by this constructor has the same semantics — no inherited keys, so an
 * event named `toString` or `constructor` finds nothing — but V8 gives it fast, in-object
 * properties and one hidden class shared by every socket whose listeners were added in
 * the same order: 56 B. EventEmitter reads and writes `_events` as a plain object,
 * so listeners added, removed or emitted later behave as before (test/transport/listener-table.test.ts).
 */
const ListenerTable = function ListenerTable () {} as unknown as new () => Record<string | symbol, unknown>
ListenerTable.prototype = Object.create(null)

type WithListeners = EventEmitter & { _events?: Record<string | symbol, unknown> }

/**
 * Moves an emitter's listeners into a compact table. Call it once the listeners that
 * last the emitter's life are added. Leaves an emitter whose `_events` is not the
 * null-prototype object it knows (another Node version, say) as it is.
 */
export function compactListeners (emitter: EventEmitter): void {
  const target = emitter as WithListeners
  const current = target._events
  if (current === undefined || current === null || Object.getPrototypeOf(current) !== null) return
  const table = new ListenerTable()
  for (const name of Reflect.ownKeys(current)) table[name] = current[name]
  target._events = table
}
