/**
 * Whole milliseconds since this process started, for durations and timeouts (never for
 * timestamps). A small integer for weeks, so V8 keeps it unboxed in the fields of objects
 * there is one of per connection or channel; a Date.now() there is a 16-byte boxed double.
 */
export const monotonicMs = (): number => Math.floor(performance.now())
