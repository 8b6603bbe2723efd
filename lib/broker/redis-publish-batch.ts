import type { EventDraft } from '../core/event.js'
import { newEpochBase } from './epochs.js'
import type { ChannelHistory, HistoryPolicy } from './history-policy.js'
import { entryBody, type RedisLayout } from './redis-layout.js'

/** What PUBLISH_BATCH_SCRIPT answers for each event: {epoch, offset, ms, replayed (1: a dedupe key seen before)}. */
export type PublishReply = [string, number, string, number]

/**
 * Splits a batch by cluster slot, keeping the drafts' order within each part (so each
 * channel's, whose keys share a slot); on one Redis it is one part. Each part is one script
 * run: on a cluster a batch spanning several shards is several runs, each all or nothing.
 */
export function groupBySlot<T extends { channel: string }> (drafts: readonly T[], layout: RedisLayout): Array<{ drafts: T[], indexes: number[] }> {
  if (!layout.clustered) return [{ drafts: [...drafts], indexes: drafts.map((_, i) => i) }]
  const groups = new Map<number, { drafts: T[], indexes: number[] }>()
  drafts.forEach((draft, i) => {
    const slot = layout.slotOfChannel(draft.channel)
    let group = groups.get(slot)
    if (group === undefined) groups.set(slot, group = { drafts: [], indexes: [] })
    group.drafts.push(draft)
    group.indexes.push(i)
  })
  return [...groups.values()]
}

/**
 * The KEYS and ARGV of one PUBLISH_BATCH_SCRIPT call (lib/broker/redis-layout.ts), for
 * one event or many: what every event shares, once, then each event's own keys and
 * arguments.
 */
export function publishBatchArgs (
  drafts: readonly EventDraft[], layout: RedisLayout, policy: HistoryPolicy, retentionOf: (history: ChannelHistory) => number,
  dedupeTtlSeconds: number
): { keys: string[], args: Array<string | number> } {
  // On a cluster the caller passes drafts of one slot (RedisBroker.publishBatch groups them).
  const keys: string[] = [layout.baseKeyOf(drafts[0].channel)]
  const args: Array<string | number> = [newEpochBase(), dedupeTtlSeconds]
  for (const draft of drafts) {
    const [eventKeys, eventArgs] = eventArguments(draft, layout, policy, retentionOf)
    keys.push(...eventKeys)
    args.push(...eventArgs)
  }
  return { keys, args }
}

/**
 * One event's KEYS (meta, history, dedupe key, origin mark) and ARGV (body, history size,
 * history TTL, retention, pub/sub name, dedupe 1/0, origin offset, origin index).
 */
function eventArguments (
  draft: EventDraft, layout: RedisLayout, policy: HistoryPolicy, retentionOf: (history: ChannelHistory) => number
): [string[], Array<string | number>] {
  const channel = layout.keys(draft.channel)
  const history = policy.of(draft.channel)
  const dedupe = draft.dedupe === undefined ? undefined : layout.dedupeKey(draft.channel, draft.dedupe)
  const origin = draft.origin
  return [
    [channel.meta, channel.history, dedupe ?? channel.meta, origin === undefined ? channel.meta : layout.originKey(origin.source, draft.channel)],
    [entryBody(draft.type, draft.payload), history.size, history.ttlSeconds, retentionOf(history), channel.pubsub,
      dedupe === undefined ? 0 : 1, origin?.offset ?? -1, origin?.index ?? 0]
  ]
}
