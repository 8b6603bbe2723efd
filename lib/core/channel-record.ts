/**
 * An empty object to be keyed by channel names (a subscribe's positions, a publish's
 * receipt). A `{}` takes a hidden class of V8's per property name it is given, and a user's
 * own channel is a name no other object had: on a reconnect storm that was several µs per
 * client (bench/README.md, session 19). An object with no prototype is a dictionary from
 * the start, and a name such as `__proto__` is a key like any other. JSON.stringify writes
 * it as it writes `{}`.
 */
export function channelRecord<T> (): Record<string, T> {
  return Object.create(null) as Record<string, T>
}
