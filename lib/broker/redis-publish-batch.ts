import type { EventDraft } from '../core/event.js'
import { newEpochBase } from './epochs.js'
import type { ChannelHistory, HistoryPolicy } from './history-policy.js'
import { entryBody, type RedisLayout } from './redis-layout.js'

/** What PUBLISH_SCRIPT answers for one event: {epoch, offset, ms}. */
export type PublishReply = [string, number, string]

/**
 * The KEYS and ARGV of one PUBLISH_BATCH_SCRIPT call (lib/broker/redis-layout.ts): what
 * every event's PUBLISH_SCRIPT call shares, once, then each event's own keys and
 * arguments, as RedisBroker.publish passes them one event at a time (keep the two in step).
 */
export function publishBatchArgs (
  drafts: readonly EventDraft[], layout: RedisLayout, policy: HistoryPolicy, retentionOf: (history: ChannelHistory) => number
): { keys: string[], args: Array<string | number> } {
  const keys: string[] = [layout.baseKey]
  const args: Array<string | number> = [newEpochBase()]
  for (const draft of drafts) {
    const channel = layout.keys(draft.channel)
    const history = policy.of(draft.channel)
    keys.push(channel.meta, channel.history)
    args.push(entryBody(draft.type, draft.payload), history.size, history.ttlSeconds, retentionOf(history), channel.pubsub)
  }
  return { keys, args }
}
