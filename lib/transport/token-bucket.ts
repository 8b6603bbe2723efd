import { monotonicMs } from '../core/clock.js'

/**
 * A token bucket's state: `ratePerSecond` tokens refill continuously up to `burst`.
 * Two numbers, kept as fields on whatever is limited (a WebSocket session), so one
 * can live on every connection without a timer or an object of its own.
 *
 * Both are small integers, so V8 keeps them inside the object: tokens in thousandths,
 * time in `monotonicMs`. A fractional token count or a Date.now() would each be a boxed
 * double, 16 B more per connection.
 */
export interface TokenBucket {
  /** Tokens × 1000. */
  milliTokens: number
  /** When `milliTokens` was last refilled, in `monotonicMs`. */
  updatedMs: number
}

/** A full bucket. */
export const fullBucket = (burst: number, now = monotonicMs()): TokenBucket => ({ milliTokens: burst * 1000, updatedMs: now })

/** Adds what `ratePerSecond` gave since the last refill, up to `burst`. */
export function refillBucket (bucket: TokenBucket, ratePerSecond: number, burst: number, now = monotonicMs()): void {
  const elapsed = now - bucket.updatedMs
  if (elapsed <= 0) return
  // ms × tokens/s = thousandths of a token.
  bucket.milliTokens = Math.min(burst * 1000, bucket.milliTokens + elapsed * ratePerSecond)
  bucket.updatedMs = now
}

/** Takes one token; false when the bucket is empty. `ratePerSecond` and `burst` are integers. */
export function takeToken (bucket: TokenBucket, ratePerSecond: number, burst: number, now = monotonicMs()): boolean {
  refillBucket(bucket, ratePerSecond, burst, now)
  if (bucket.milliTokens < 1000) return false
  bucket.milliTokens -= 1000
  return true
}
