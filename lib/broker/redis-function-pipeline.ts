import type { Redis } from 'ioredis'
import { callFunction, type FunctionLibrary, isFunctionMissing } from './redis-functions.js'

/** One FCALL: the function's name, its keys and its arguments. */
export interface FunctionCall {
  fn: string
  keys: readonly string[]
  args: ReadonlyArray<string | number>
}

const toError = (err: unknown): Error => err instanceof Error ? err : new Error(String(err))

/**
 * Makes `calls` on one Redis as one pipeline (one socket write) and answers each, in order,
 * with its reply or the error it got. A call that met a Redis without the library (restarted
 * without persistence, FUNCTION FLUSH) did not run: it is made again through callFunction,
 * which loads the library, one after the other in the order asked, so two publishes to one
 * channel still land in that order.
 */
export async function pipelineFunctionCalls<T> (client: Redis, library: FunctionLibrary,
  calls: readonly FunctionCall[]): Promise<Array<T | Error>> {
  const single = async (call: FunctionCall): Promise<T | Error> =>
    await callFunction<T>(client, library, call.fn, call.keys, call.args).catch(toError)
  if (calls.length === 1) return [await single(calls[0])]
  const pipeline = client.pipeline()
  for (const call of calls) pipeline.fcall(call.fn, call.keys.length, ...call.keys, ...call.args)
  let replies: Array<[Error | null, unknown]>
  try {
    replies = await pipeline.exec() ?? []
  } catch (err) {
    return calls.map(() => toError(err))
  }
  const answers = new Array<T | Error>(calls.length)
  for (let i = 0; i < calls.length; i++) {
    const [err, reply] = replies[i] ?? [new Error('no reply to a pipelined call')]
    answers[i] = err === null ? reply as T : isFunctionMissing(err) ? await single(calls[i]) : toError(err)
  }
  return answers
}

interface Pending {
  call: FunctionCall
  resolve(reply: unknown): void
  reject(err: Error): void
}

/**
 * The FCALLs one turn of the event loop asks for, sent together at its end (setImmediate)
 * as one pipeline.
 *
 * Why: every HTTP publish is one FCALL, and its socket write to Redis was a quarter of the
 * gateway's time in a profile of HTTP publishing (bench/README.md, "Session 17"); with 16
 * requests in flight a turn handles about four of them. Redis runs the calls in the order
 * asked, as it would have run them one by one. The cost is latency of at most one turn.
 */
export class TurnFunctionCalls {
  private pending: Pending[] = []

  constructor (private readonly client: Redis, private readonly library: FunctionLibrary) {}

  async call<T> (call: FunctionCall): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      this.pending.push({ call, resolve: resolve as (reply: unknown) => void, reject })
      if (this.pending.length === 1) setImmediate(this.flush)
    })
  }

  private readonly flush = (): void => {
    const batch = this.pending
    this.pending = []
    void pipelineFunctionCalls(this.client, this.library, batch.map((p) => p.call)).then((answers) => {
      answers.forEach((answer, i) => { if (answer instanceof Error) batch[i].reject(answer); else batch[i].resolve(answer) })
    }, (err: unknown) => { for (const p of batch) p.reject(toError(err)) })
  }
}
