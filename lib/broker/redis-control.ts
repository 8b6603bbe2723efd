import type { RedisClient } from './redis-connection.js'
import { type Revocation, revocationName } from '../auth/revocations.js'
import { BrokerUnavailableError } from './broker.js'
import type { ControlBackend, ControlMessage } from './control.js'

/**
 * Disconnects and revocations over Redis (lib/broker/control.ts): a message is published on
 * the deployment's control channel, which every instance's subscriber connection holds;
 * revocations are kept in the hash `P revocations` (a field per user or jti, holding when it
 * ends), which an instance reads at start and whenever its subscriber connection comes back.
 */
export interface ControlLayout {
  readonly controlChannel: string
  readonly revocationsKey: string
}

/**
 * Merges a revocation into its field: the later issuedBefore and the later end win. The
 * hash lives as long as its latest revocation (its expiry only ever moves later), so
 * revocations leave Redis without waiting for an instance to start or reconnect. Fields
 * that have ended (ARGV[3]: now, epoch ms) leave a few at a time: each store looks at the
 * next PRUNE_STEP fields (HSCAN, its cursor kept in the hash under CURSOR_FIELD), so a
 * store costs Redis the same however many revocations are in force (it read the whole
 * hash before: 12 ms of Redis per revoke at 1 000–10 000 revoked users, now ~90 µs at any
 * number up to 50 000, measured: bench/README.md "Revocations kept"), and an ended
 * field is gone within (fields ÷ PRUNE_STEP) stores.
 */
const PRUNE_STEP = 32
const CURSOR_FIELD = '#cursor'
const STORE_SCRIPT = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = cjson.decode(ARGV[2])
if old then
  local prev = cjson.decode(old)
  -- ('until' is a Lua keyword: fields by name in brackets.)
  if prev['until'] and prev['until'] > new['until'] then new['until'] = prev['until'] end
  if prev['issuedBefore'] and new['issuedBefore'] and prev['issuedBefore'] > new['issuedBefore'] then new['issuedBefore'] = prev['issuedBefore'] end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(new))
local now = tonumber(ARGV[3])
local scan = redis.call('HSCAN', KEYS[1], redis.call('HGET', KEYS[1], '${CURSOR_FIELD}') or '0', 'COUNT', ${PRUNE_STEP})
local fields = scan[2]
for i = 1, #fields, 2 do
  if fields[i] ~= '${CURSOR_FIELD}' then
    local ok, r = pcall(cjson.decode, fields[i + 1])
    local ends = ok and type(r) == 'table' and tonumber(r['until']) or nil
    if not ends or ends <= now then redis.call('HDEL', KEYS[1], fields[i]) end
  end
end
-- A sweep that came round (a small hash is one) keeps no cursor.
if scan[1] == '0' then redis.call('HDEL', KEYS[1], '${CURSOR_FIELD}') else redis.call('HSET', KEYS[1], '${CURSOR_FIELD}', scan[1]) end
local ends = math.ceil(new['until'])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIREAT', KEYS[1], ends)
else
  redis.call('PEXPIREAT', KEYS[1], ends, 'GT')
end
return 1
`

type ScriptedRedis = RedisClient & { rtgStoreRevocation(key: string, field: string, value: string, now: number): Promise<number> }

export class RedisControl implements ControlBackend {
  private listener: (message: ControlMessage) => void = () => {}
  private readonly resyncListeners: Array<() => void> = []

  constructor (
    private readonly redis: RedisClient,
    private readonly layout: ControlLayout,
    /** Publishes on the control channel (PUBLISH; SPUBLISH on a cluster). */
    private readonly publish: (name: string, message: string) => Promise<unknown>
  ) {
    redis.defineCommand('rtgStoreRevocation', { numberOfKeys: 1, lua: STORE_SCRIPT })
  }

  async send (message: ControlMessage): Promise<void> {
    try {
      await this.publish(this.layout.controlChannel, JSON.stringify(message))
    } catch (err) {
      throw new BrokerUnavailableError('redis did not take the control message', { cause: err })
    }
  }

  onMessage (listener: (message: ControlMessage) => void): void {
    this.listener = listener
  }

  onResync (listener: () => void): void {
    this.resyncListeners.push(listener)
  }

  async store (revocation: Revocation): Promise<void> {
    try {
      await (this.redis as ScriptedRedis).rtgStoreRevocation(this.layout.revocationsKey, revocationName(revocation), JSON.stringify(revocation), Date.now())
    } catch (err) {
      throw new BrokerUnavailableError('redis did not keep the revocation', { cause: err })
    }
  }

  async load (): Promise<Revocation[]> {
    const fields = await this.redis.hgetall(this.layout.revocationsKey)
    const now = Date.now()
    const live: Revocation[] = []
    const ended: string[] = []
    for (const [field, text] of Object.entries(fields)) {
      if (field === CURSOR_FIELD) continue
      const revocation = parseRevocation(text)
      if (revocation === null || revocation.until <= now) ended.push(field)
      else live.push(revocation)
    }
    if (ended.length > 0) await this.redis.hdel(this.layout.revocationsKey, ...ended)
    return live
  }

  /** A message on the control channel. */
  receive (text: string): void {
    let message: ControlMessage
    try {
      message = JSON.parse(text) as ControlMessage
    } catch {
      return
    }
    if (message.kind === 'disconnect' || message.kind === 'revoke') this.listener(message)
  }

  /** The subscriber connection (re)subscribed: messages may have been missed meanwhile. */
  resynced (): void {
    for (const listener of this.resyncListeners) listener()
  }
}

function parseRevocation (text: string): Revocation | null {
  try {
    const r = JSON.parse(text) as Revocation
    if (typeof r.until !== 'number') return null
    if (r.kind === 'user' && typeof r.userId === 'string' && typeof r.issuedBefore === 'number') return r
    if (r.kind === 'jti' && typeof r.jti === 'string') return r
    return null
  } catch {
    return null
  }
}
