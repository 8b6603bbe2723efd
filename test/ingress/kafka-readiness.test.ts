import t from 'tap'
import type { IdempotencyClaim } from '../../lib/broker/broker.js'
import type { EventDraft, PublishedEvent } from '../../lib/core/event.js'
import { FlakyBroker } from '../support/flaky-broker.js'
import { gateway, kafkaFixture, useKafka } from '../support/kafka-fixture.js'

/**
 * Readiness of a healthy member through a rebalance (review of lib/ingress/group-liveness.ts):
 * a member that rejoins waits, heartbeating nothing, for every other member, and one in
 * the middle of a long batch rejoins only when its batch is done or its session ends. The
 * waiting member is healthy: its readiness must stay 200, or a rolling deploy would take
 * every gateway out of the load balancer at once.
 */
class StuckBroker extends FlakyBroker {
  private release = (): void => {}
  private readonly gate = new Promise<void>((resolve) => { this.release = resolve })
  stuck = false

  override async publish (draft: EventDraft): Promise<PublishedEvent> {
    this.stuck = true
    await this.gate
    return await super.publish(draft)
  }

  override async publishBatch (drafts: readonly EventDraft[], claim?: IdempotencyClaim): Promise<PublishedEvent[]> {
    this.stuck = true
    await this.gate
    return await super.publishBatch(drafts, claim)
  }

  unstick (): void {
    this.release()
  }
}

t.test('a member waiting in a rebalance for one stuck mid-batch stays ready', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t, 4)
  const idle = await gateway(t, kafka, { LOG_LEVEL: 'silent' })
  let stuckBroker: StuckBroker | undefined
  await gateway(t, kafka, { LOG_LEVEL: 'silent' }, (deliver) => (stuckBroker = new StuckBroker(deliver, { down: false })))
  t.teardown(() => stuckBroker?.unstick())
  // A message on every partition: the stuck member's batch never ends (until its session does).
  await kafka.produceMany('realtime.publish', [0, 1, 2, 3].map((partition) => ({ value: { channel: `room:rb${partition}`, type: 't', payload: {} }, partition })))
  for (const deadline = Date.now() + 30_000; stuckBroker?.stuck !== true;) {
    if (Date.now() > deadline) throw new Error('the second member never got a batch')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }

  const statuses: number[] = []
  const polling = { on: true }
  const poll = (async () => {
    while (polling.on) {
      statuses.push((await fetch(`${idle.url}/health/ready`)).status)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  })()
  // A third member joins (a deploy, a scale-out): the group rebalances, and waits for the stuck one.
  const joiner = await gateway(t, kafka, { LOG_LEVEL: 'silent' })
  await new Promise((resolve) => setTimeout(resolve, 2000))
  polling.on = false
  await poll
  t.ok(statuses.length > 50, `readiness polled ${statuses.length} times through the rebalance`)
  t.same(statuses.filter((s) => s !== 200), [], 'the waiting member stayed ready throughout')
  t.equal((await fetch(`${joiner.url}/health/ready`)).status, 200, 'and the group formed again')
})
