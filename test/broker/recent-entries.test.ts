import t from 'tap'
import fc from 'fast-check'
import { RecentEntries } from '../../lib/broker/recent-entries.js'

/**
 * RecentEntries (lib/broker/recent-entries.ts): per channel, the last entries delivered, in
 * offset order with no hole, within the channel's capacity and, over all channels, the
 * byte budget. What it answers must always be a run of what was appended last.
 */
const OVERHEAD = 64
const at = (offset: number, epoch = 'e1') => ({ offset, epoch })
/** Entries given back as they are, kept decoded at no cost: the tests of what is held. */
const asIs = { decode: (_channel: string, entry: string) => entry, keptBytes: () => 0 }

/** A channel's view with its entries, undefined for a channel not held. */
function held (recent: RecentEntries<string>, channel: string) {
  const view = recent.view(channel)
  return view === undefined ? undefined : { ...view, entries: recent.after(channel, view.base) }
}

t.test('a channel keeps its last entries, up to its capacity', async (t) => {
  const recent = new RecentEntries(1 << 20, () => 3, asIs)
  for (let n = 1; n <= 5; n++) recent.append('c', at(n), `entry-${n}`)
  t.match(held(recent, 'c'), { epoch: 'e1', base: 2, count: 3, entries: ['entry-3', 'entry-4', 'entry-5'] })
  t.same(recent.after('c', 4), ['entry-5'], 'what follows an offset')
  t.match(recent.size(), { bytes: 3 * (7 + OVERHEAD), entries: 3, channels: 1 })
})

t.test('an entry that does not follow the last one starts the tail again from it', async (t) => {
  const recent = new RecentEntries(1 << 20, () => 10, asIs)
  recent.append('c', at(1), 'a')
  recent.append('c', at(2), 'b')
  recent.append('c', at(4), 'd') // 3 never came
  t.same(held(recent, 'c')?.entries, ['d'])
  t.equal(held(recent, 'c')?.base, 3)
  recent.append('c', at(1, 'e2'), 'x') // a new epoch
  t.same([held(recent, 'c')?.epoch, held(recent, 'c')?.base, held(recent, 'c')?.entries], ['e2', 0, ['x']])
  t.equal(recent.size().entries, 1)
  recent.reset('c', at(7, 'e3'))
  t.same([held(recent, 'c')?.base, held(recent, 'c')?.entries], [7, []])
  t.match(recent.size(), { bytes: 0, entries: 0, channels: 1 })
  recent.forget('c')
  t.equal(held(recent, 'c'), undefined)
  t.match(recent.size(), { bytes: 0, entries: 0, channels: 0 })
})

t.test('over budget, the oldest entries of all channels go first', async (t) => {
  const entry = 'x'.repeat(36) // 100 bytes with the overhead
  const recent = new RecentEntries(450, () => 100, asIs)
  recent.append('a', at(1), entry)
  recent.append('b', at(1), entry)
  recent.append('a', at(2), entry)
  recent.append('b', at(2), entry)
  t.equal(recent.size().bytes, 400)
  recent.append('c', at(1), entry) // 500 > 450: a's first goes
  t.same([held(recent, 'a')?.base, held(recent, 'a')?.entries.length], [1, 1])
  recent.append('c', at(2), entry) // then b's first
  t.same([held(recent, 'b')?.base, held(recent, 'b')?.entries.length], [1, 1])
  t.equal(recent.size().bytes, 400)
  recent.append('d', at(1), 'y'.repeat(1000)) // larger than the budget: nothing of it stays, nor of the others
  t.match(recent.size(), { bytes: 0, entries: 0, channels: 4 })
  t.same(held(recent, 'd')?.base, 1, 'd stands after the entry it could not keep')
})

t.test('a zero budget keeps nothing', async (t) => {
  const recent = new RecentEntries(0, () => 10, asIs)
  recent.append('c', at(1), 'a')
  recent.reset('c', at(1))
  t.equal(held(recent, 'c'), undefined)
})

t.test('capacity 0 keeps no entry but follows the offsets', async (t) => {
  const recent = new RecentEntries(1 << 20, () => 0, asIs)
  recent.append('c', at(1), 'a')
  recent.append('c', at(2), 'b')
  t.same([held(recent, 'c')?.base, held(recent, 'c')?.entries], [2, []])
})

t.test('property: whatever the appends, resets and forgets, a view is the last run appended, within every bound', async (t) => {
  type Op = { kind: 'append', channel: number, jump: boolean, newEpoch: boolean, size: number } | { kind: 'reset', channel: number } | { kind: 'forget', channel: number }
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 8, arbitrary: fc.record({ kind: fc.constant('append' as const), channel: fc.nat(3), jump: fc.nat(9).map((n) => n === 0), newEpoch: fc.nat(19).map((n) => n === 0), size: fc.nat(200) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const), channel: fc.nat(3) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('forget' as const), channel: fc.nat(3) }) }
  )
  fc.assert(fc.property(fc.array(op, { maxLength: 3000 }), fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.constant(1 << 30)), fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 4, maxLength: 4 }), (ops, budget, capacities) => {
    const recent = new RecentEntries(budget, (c) => capacities[Number(c.slice(1))], asIs)
    // The model: each channel's whole run since its last break (epoch, offset, entries).
    const model = new Map<string, { epoch: string, start: number, entries: string[] }>()
    let epochs = 0
    for (const o of ops) {
      const channel = `c${o.channel}`
      const run = model.get(channel)
      if (o.kind === 'append') {
        const epoch = run === undefined || o.newEpoch ? `e${++epochs}` : run.epoch
        const next = run === undefined || epoch !== run.epoch ? 1 : run.start + run.entries.length + 1 + (o.jump ? 2 : 0)
        const entry = `${channel}:${epoch}:${next}:${'z'.repeat(o.size)}`
        recent.append(channel, { epoch, offset: next }, entry)
        if (run === undefined || epoch !== run.epoch || o.jump) model.set(channel, { epoch, start: next - 1, entries: [entry] })
        else run.entries.push(entry)
      } else if (o.kind === 'reset' && run !== undefined) {
        const offset = run.start + run.entries.length + 5
        recent.reset(channel, { epoch: run.epoch, offset })
        model.set(channel, { epoch: run.epoch, start: offset, entries: [] })
      } else if (o.kind === 'forget') {
        recent.forget(channel)
        model.delete(channel)
      }
    }
    let bytes = 0
    let entries = 0
    for (let c = 0; c < 4; c++) {
      const channel = `c${c}`
      const view = held(recent, channel)
      const run = model.get(channel)
      if (budget === 0 || run === undefined) {
        if (view !== undefined) return false
        continue
      }
      if (view === undefined) return false
      const end = run.start + run.entries.length
      // It ends where the run ends, and holds a suffix of it, no longer than the capacity.
      if (view.epoch !== run.epoch || view.base + view.entries.length !== end) return false
      if (view.entries.length > capacities[c]) return false
      const suffix = run.entries.slice(run.entries.length - view.entries.length)
      if (view.entries.some((e, i) => e !== suffix[i])) return false
      // Unbounded by the budget, it holds all the capacity allows.
      if (budget === 1 << 30 && view.entries.length !== Math.min(capacities[c], run.entries.length)) return false
      bytes += view.entries.reduce((sum, e) => sum + e.length + OVERHEAD, 0)
      entries += view.entries.length
    }
    const size = recent.size()
    // The queue's records, live and dead, stay within twice the live entries (or 1024).
    return size.bytes === bytes && size.entries === entries && size.bytes <= budget && size.queued <= Math.max(1024, 2 * size.entries) + 1
  }), { numRuns: 150 })
  t.pass('every view is a bounded suffix of the last run appended, and the accounting adds up')
})

t.test('records of entries gone (dropped by capacity, or their channel reset) do not pile up in the eviction queue', async (t) => {
  const recent = new RecentEntries(1 << 30, () => 10, asIs)
  for (let n = 1; n <= 5000; n++) recent.append('c', at(n), `e${n}`)
  t.match(recent.size(), { entries: 10 })
  t.ok(recent.size().queued <= 1024, `queue ${recent.size().queued} records for 10 entries`)
  for (let n = 1; n <= 5000; n++) recent.append(`k${n}`, at(1), 'x') // 5000 channels of one entry
  for (let n = 1; n <= 5000; n++) recent.forget(`k${n}`)
  recent.append('c', at(5001), 'e5001')
  t.match(recent.size(), { entries: 10, channels: 1 })
  t.ok(recent.size().queued <= 1024, `queue ${recent.size().queued} records after 5000 channels were forgotten`)
  t.same(recent.after('c', 4995), ['e4996', 'e4997', 'e4998', 'e4999', 'e5000', 'e5001'])
})

/** A decoder that counts its calls and charges `kept` bytes per entry kept decoded. */
function countingDecoder (kept: number) {
  const calls = new Map<string, number>()
  return {
    calls,
    decode: (channel: string, entry: string) => {
      calls.set(entry, (calls.get(entry) ?? 0) + 1)
      return { channel, entry }
    },
    keptBytes: () => kept
  }
}

t.test('an entry read a second time is kept decoded: later readers share the object, decoded no more', async (t) => {
  const decoder = countingDecoder(100)
  const recent = new RecentEntries(1 << 20, () => 10, decoder)
  for (let n = 1; n <= 3; n++) recent.append('c', at(n), `e${n}`)
  const raw = 3 * (2 + OVERHEAD)
  const first = recent.after('c', 0)
  t.same(first.map((d) => d.entry), ['e1', 'e2', 'e3'])
  t.same([...decoder.calls.values()], [1, 1, 1], 'each decoded once')
  t.equal(recent.size().bytes, raw, 'read once: nothing kept')
  const second = recent.after('c', 1)
  t.same(second.map((d) => d.entry), ['e2', 'e3'])
  t.same([decoder.calls.get('e1'), decoder.calls.get('e2'), decoder.calls.get('e3')], [1, 2, 2], 'read again: decoded and kept')
  t.equal(recent.size().bytes, raw + 2 * 100, 'the kept ones counted')
  const third = recent.after('c', 0)
  t.same([decoder.calls.get('e1'), decoder.calls.get('e2'), decoder.calls.get('e3')], [2, 2, 2], 'kept ones not decoded again')
  t.equal(third[1], second[0], 'the same object for every reader')
  t.equal(third[2], second[1])
  t.equal(recent.size().bytes, raw + 3 * 100)
  // Dropped by capacity, reset or forgotten: what was counted for them goes too.
  for (let n = 4; n <= 11; n++) recent.append('c', at(n), `e${n}`) // e1 goes (capacity 10)
  t.equal(recent.size().bytes, 10 * (2 + OVERHEAD) + 2 + 2 * 100, 'e1 gone with its kept bytes (e10 and e11 are a character longer)')
  recent.reset('c', at(20))
  t.match(recent.size(), { bytes: 0, entries: 0 })
})

t.test('entries kept decoded count in the budget: a read over it lets the oldest entries of all go', async (t) => {
  const decoder = countingDecoder(200)
  const entry = 'x'.repeat(36) // 100 bytes with the overhead
  const recent = new RecentEntries(600, () => 100, decoder)
  recent.append('old', at(1), entry)
  recent.append('old', at(2), entry)
  recent.append('hot', at(1), `${entry}`)
  t.equal(recent.size().bytes, 300)
  recent.after('hot', 0)
  const shared = recent.after('hot', 0) // kept: 300 + 200 = 500
  t.equal(recent.size().bytes, 500)
  recent.append('hot', at(2), entry) // 600: within
  t.equal(recent.size().bytes, 600)
  recent.after('hot', 1)
  recent.after('hot', 1) // hot:2 kept too: 800 > 600, old's two entries go
  t.same([recent.view('old')?.count, recent.view('hot')?.count], [0, 2])
  t.equal(recent.size().bytes, 600)
  t.equal(recent.after('hot', 0)[0], shared[0], 'what stayed is still shared')
})

t.test('property: reads between appends give the same runs as the raw entries, and the accounting of kept ones adds up', async (t) => {
  type Op = { kind: 'append', channel: number, jump: boolean, size: number } | { kind: 'read', channel: number, back: number } | { kind: 'reset', channel: number }
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('append' as const), channel: fc.nat(2), jump: fc.nat(9).map((n) => n === 0), size: fc.nat(60) }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('read' as const), channel: fc.nat(2), back: fc.nat(12) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const), channel: fc.nat(2) }) }
  )
  const KEPT = 50
  fc.assert(fc.property(fc.array(op, { maxLength: 600 }), fc.integer({ min: 0, max: 4000 }), fc.integer({ min: 1, max: 12 }), (ops, budget, capacity) => {
    const decoder = countingDecoder(KEPT)
    const recent = new RecentEntries(budget, () => capacity, decoder)
    const runs = new Map<string, { start: number, entries: string[] }>()
    const reads = new Map<string, number>()
    for (const o of ops) {
      const channel = `c${o.channel}`
      const run = runs.get(channel)
      if (o.kind === 'append') {
        const next = run === undefined ? 1 : run.start + run.entries.length + 1 + (o.jump ? 3 : 0)
        const entry = `${channel}:${next}:${'z'.repeat(o.size)}`
        recent.append(channel, at(next), entry)
        if (run === undefined || o.jump) runs.set(channel, { start: next - 1, entries: [entry] })
        else run.entries.push(entry)
      } else if (o.kind === 'reset' && run !== undefined) {
        const offset = run.start + run.entries.length + 5
        recent.reset(channel, at(offset))
        runs.set(channel, { start: offset, entries: [] })
      } else if (o.kind === 'read' && run !== undefined) {
        const view = recent.view(channel)
        if (view === undefined) return budget === 0
        const from = Math.max(view.base, view.base + view.count - o.back)
        const got = recent.after(channel, from)
        const end = run.start + run.entries.length
        // What follows `from`, as appended (the view ends where the run ends).
        if (view.base + view.count !== end) return false
        const expected = run.entries.slice(from - run.start)
        if (got.length !== expected.length || got.some((d, i) => d.entry !== expected[i] || d.channel !== channel)) return false
        for (const e of expected) reads.set(e, (reads.get(e) ?? 0) + 1)
      }
    }
    // Decoded once per read until kept (the second read), never after.
    for (const [entry, n] of reads) if (decoder.calls.get(entry) !== Math.min(n, 2)) return false
    let bytes = 0
    for (const [channel, run] of runs) {
      const view = recent.view(channel)
      if (view === undefined) return budget === 0
      for (let offset = view.base + 1; offset <= view.base + view.count; offset++) {
        const entry = run.entries[offset - run.start - 1]
        bytes += entry.length + OVERHEAD + ((reads.get(entry) ?? 0) >= 2 ? KEPT : 0)
      }
    }
    return recent.size().bytes === bytes && bytes <= budget
  }), { numRuns: 200 })
  t.pass('runs read as appended, each entry decoded at most twice, bytes as counted and within the budget')
})

t.test('an entry that comes after the last one\'s lifetime starts the tail again (the store dropped what was before)', async (t) => {
  let now = 0
  const recent = new RecentEntries(1 << 20, () => 10, asIs, () => 1000, () => now)
  recent.append('c', at(1), 'a')
  now = 999
  recent.append('c', at(2), 'b')
  t.same(held(recent, 'c')?.entries, ['a', 'b'], 'within the lifetime of the last one: kept')
  now = 999 + 1000
  recent.append('c', at(3), 'c')
  t.same([held(recent, 'c')?.base, held(recent, 'c')?.entries], [2, ['c']], 'after it: only the new one')
})
