/** Bins: 10 µs wide below 100 ms, 1 ms wide from 100 ms to 10 s, then one overflow bin. */
const FINE_BINS = 10_000
const COARSE_BINS = 9_900
const BIN_COUNT = FINE_BINS + COARSE_BINS + 1

function binOf (ms: number): number {
  if (ms < 100) return Math.floor(ms * 100)
  return Math.min(BIN_COUNT - 1, FINE_BINS + Math.floor(ms - 100))
}

/** Upper edge of a bin, in ms: a percentile is reported as "at most this". */
function upperEdge (bin: number): number {
  return bin < FINE_BINS ? (bin + 1) / 100 : 100 + (bin - FINE_BINS) + 1
}

/** Only the bins that hold samples, as [bin, count]: what crosses the IPC channel. */
export type SparseHistogram = Array<[number, number]>

/**
 * A fixed-size latency histogram (milliseconds), so a load process can record every
 * delivery of a run in constant memory and the parent can merge processes exactly.
 */
export class Histogram {
  private readonly bins = new Uint32Array(BIN_COUNT)
  count = 0
  /** Samples below zero (clock skew between processes); recorded as 0. */
  negative = 0

  record (ms: number): void {
    if (ms < 0) {
      this.negative++
      ms = 0
    }
    this.bins[binOf(ms)]++
    this.count++
  }

  sparse (): SparseHistogram {
    const out: SparseHistogram = []
    for (let i = 0; i < BIN_COUNT; i++) if (this.bins[i] !== 0) out.push([i, this.bins[i]])
    return out
  }

  add (sparse: SparseHistogram): void {
    for (const [bin, n] of sparse) {
      this.bins[bin] += n
      this.count += n
    }
  }

  /** The smallest bin edge under which at least `p` (0–1) of the samples fall; NaN when empty. */
  percentile (p: number): number {
    if (this.count === 0) return NaN
    const rank = Math.max(1, Math.ceil(p * this.count))
    let seen = 0
    for (let i = 0; i < BIN_COUNT; i++) {
      seen += this.bins[i]
      if (seen >= rank) return upperEdge(i)
    }
    return upperEdge(BIN_COUNT - 1)
  }
}
