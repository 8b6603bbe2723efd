import t from 'tap'
import type { HistoryResult } from '../../lib/broker/broker.js'
import type { PublishedEvent } from '../../lib/core/event.js'
import { type ChannelAsk, holdsLive, planFor, readFor } from '../../lib/hub/replay-plan.js'

// The seam between history and live delivery, case by case (lib/hub/replay-plan.ts).
const E = 'epoch-1'
const ev = (offset: number): PublishedEvent => ({ channel: 'room:a', type: 't', payload: {}, offset, epoch: E, ts: '2026-11-30T00:00:00.000Z' })
const evs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => ev(from + i))
const read = (offset: number, events: PublishedEvent[] = [], recovered = true, epoch = E): HistoryResult =>
  ({ position: { offset, epoch }, events, recovered })
const offsets = (events: readonly PublishedEvent[]) => events.map((e) => e.offset)

interface Case {
  name: string
  ask: ChannelAsk
  read: ReturnType<typeof readFor>
  holds: boolean
  result: HistoryResult
  /** The first event held back while the channel was read. */
  firstHeld?: number
  want: { recovered?: boolean, reset?: number, replay: number[], liveAfter: number, sentAfter?: number }
}

const cases: Case[] = [
  {
    name: 'new channel, live edge: nothing replayed, live after the position',
    ask: {},
    read: { kind: 'position' },
    holds: true,
    result: read(7),
    want: { replay: [], liveAfter: 7, sentAfter: 7 }
  },
  {
    name: 'new channel, since held by history: the missed events, then live after the position',
    ask: { since: { offset: 4, epoch: E } },
    read: { kind: 'since', since: { offset: 4, epoch: E } },
    holds: true,
    result: read(7, evs(5, 7)),
    want: { recovered: true, replay: [5, 6, 7], liveAfter: 7, sentAfter: 4 }
  },
  {
    name: 'new channel, since no longer held: recovered false, nothing replayed (never a partial replay)',
    ask: { since: { offset: 1, epoch: E } },
    read: { kind: 'since', since: { offset: 1, epoch: E } },
    holds: true,
    result: read(9, [], false),
    want: { recovered: false, replay: [], liveAfter: 9, sentAfter: 9 }
  },
  {
    name: 'new channel, rewind: the last events, then live after the position',
    ask: { rewind: 2 },
    read: { kind: 'recent', count: 2 },
    holds: true,
    result: read(7, evs(6, 7)),
    want: { replay: [6, 7], liveAfter: 7, sentAfter: 5 }
  },
  {
    name: 'new channel, rewind on an empty channel: nothing, live from 0',
    ask: { rewind: 1 },
    read: { kind: 'recent', count: 1 },
    holds: true,
    result: read(0),
    want: { replay: [], liveAfter: 0, sentAfter: 0 }
  },
  {
    name: 'new channel, since and rewind: since wins',
    ask: { since: { offset: 6 }, rewind: 5 },
    read: { kind: 'since', since: { offset: 6 } },
    holds: true,
    result: read(7, evs(7, 7)),
    want: { recovered: true, replay: [7], liveAfter: 7, sentAfter: 6 }
  },
  {
    name: 'held channel named again: its position only, nothing held back',
    ask: { sentAfter: 3 },
    read: { kind: 'position' },
    holds: false,
    result: read(7),
    want: { replay: [], liveAfter: 0 }
  },
  {
    name: 'held channel with rewind: rewind is for channels the subscribe joins',
    ask: { sentAfter: 3, rewind: 3 },
    read: { kind: 'position' },
    holds: false,
    result: read(7),
    want: { replay: [], liveAfter: 0 }
  },
  {
    name: 'held channel resumed from a point it was sent everything after: recovered, nothing to replay, and of what was held back only what the client has not seen',
    ask: { sentAfter: 3, since: { offset: 5, epoch: E } },
    read: { kind: 'since', since: { offset: 5, epoch: E } },
    holds: true,
    result: read(7, evs(6, 7)),
    firstHeld: 4,
    want: { recovered: true, replay: [], liveAfter: 5 }
  },
  {
    name: 'held channel resumed from before where it joined, nothing sent since (all held back): only the events it was not sent, then what was held',
    ask: { sentAfter: 5, since: { offset: 2, epoch: E } },
    read: { kind: 'since', since: { offset: 2, epoch: E } },
    holds: true,
    result: read(7, evs(3, 7)),
    firstHeld: 6,
    want: { recovered: true, replay: [3, 4, 5], liveAfter: 0, sentAfter: 2 }
  },
  {
    name: 'held channel resumed from before where it joined, nothing published since',
    ask: { sentAfter: 5, since: { offset: 2, epoch: E } },
    read: { kind: 'since', since: { offset: 2, epoch: E } },
    holds: true,
    result: read(5, evs(3, 5)),
    want: { recovered: true, replay: [3, 4, 5], liveAfter: 0, sentAfter: 2 }
  },
  {
    name: 'held channel resumed from before events it was already sent live: a reset to since, then everything after it (never backwards without one)',
    ask: { sentAfter: 5, since: { offset: 2, epoch: E } },
    read: { kind: 'since', since: { offset: 2, epoch: E } },
    holds: true,
    result: read(7, evs(3, 7)),
    want: { recovered: true, reset: 2, replay: [3, 4, 5, 6, 7], liveAfter: 7, sentAfter: 2 }
  },
  {
    name: 'the same when some went out live and the rest was held back',
    ask: { sentAfter: 5, since: { offset: 2, epoch: E } },
    read: { kind: 'since', since: { offset: 2, epoch: E } },
    holds: true,
    result: read(7, evs(3, 7)),
    firstHeld: 7,
    want: { recovered: true, reset: 2, replay: [3, 4, 5, 6, 7], liveAfter: 7, sentAfter: 2 }
  },
  {
    name: 'held channel resumed in another epoch: recovered false',
    ask: { sentAfter: 0, since: { offset: 5, epoch: 'old' } },
    read: { kind: 'since', since: { offset: 5, epoch: 'old' } },
    holds: true,
    result: read(2, [], false),
    want: { recovered: false, replay: [], liveAfter: 0 }
  }
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    t.same(readFor(c.ask), c.read, 'reads')
    t.equal(holdsLive(c.ask), c.holds, 'holds live events back')
    const plan = planFor(c.ask, c.result, c.firstHeld)
    t.same({ recovered: plan.recovered, reset: plan.reset, replay: offsets(plan.replay), liveAfter: plan.liveAfter, sentAfter: plan.sentAfter },
      { recovered: c.want.recovered, reset: c.want.reset === undefined ? undefined : { offset: c.want.reset, epoch: E }, replay: c.want.replay, liveAfter: c.want.liveAfter, sentAfter: c.want.sentAfter }, 'plans')
  })
}
