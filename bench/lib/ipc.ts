import type { ChildProcess } from 'node:child_process'

/** A request to a child process: `op` picks the handler, `id` matches the reply. */
export interface Request {
  op: string
  [field: string]: unknown
}

type Reply = Record<string, unknown>
interface Waiting {
  resolve: (reply: Reply) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * The parent's side of a forked bench process: request/reply over the IPC channel,
 * every request bounded by a timeout, every pending request failed if the child dies.
 */
export class ChildChannel {
  private nextId = 1
  private readonly waiting = new Map<number, Waiting>()
  private readonly events: Array<{ op: string, resolve: (m: Reply) => void }> = []
  private exited: string | undefined

  constructor (readonly child: ChildProcess, readonly name: string) {
    child.on('message', (message: Reply) => {
      if (typeof message.id === 'number') {
        const waiting = this.waiting.get(message.id)
        if (waiting === undefined) return
        this.waiting.delete(message.id)
        clearTimeout(waiting.timer)
        if (typeof message.error === 'string') waiting.reject(new Error(`${this.name}: ${message.error}`))
        else waiting.resolve(message)
        return
      }
      const i = this.events.findIndex((e) => e.op === message.op)
      if (i >= 0) this.events.splice(i, 1)[0].resolve(message)
    })
    child.on('exit', (code, signal) => {
      this.exited = `${this.name} exited (code ${code}, signal ${signal})`
      for (const [id, waiting] of this.waiting) {
        clearTimeout(waiting.timer)
        waiting.reject(new Error(this.exited))
        this.waiting.delete(id)
      }
    })
  }

  request<T = Reply> (request: Request, timeoutMs: number): Promise<T> {
    if (this.exited !== undefined) return Promise.reject(new Error(this.exited))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new Error(`${this.name}: ${request.op} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiting.set(id, { resolve: resolve as (r: Reply) => void, reject, timer })
      this.child.send({ ...request, id })
    })
  }

  /** Waits for an unsolicited message such as `{op: 'ready'}`. */
  event<T = Reply> (op: string, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { op, resolve: resolve as (m: Reply) => void }
      const timer = setTimeout(() => {
        this.events.splice(this.events.indexOf(entry), 1)
        reject(new Error(`${this.name}: no ${op} within ${timeoutMs} ms${this.exited === undefined ? '' : ` (${this.exited})`}`))
      }, timeoutMs)
      entry.resolve = (m) => { clearTimeout(timer); resolve(m as T) }
      this.events.push(entry)
    })
  }

  kill (): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

export type Handlers = Record<string, (request: Request) => Reply | Promise<Reply>>

/**
 * The child's side: answers each request with its handler's result (or its error), and
 * exits when the parent goes away, so no bench process outlives the run.
 */
export function serve (handlers: Handlers): void {
  process.on('message', (message: Request & { id: number }) => {
    const handler = message.op === 'exit' ? () => ({}) : handlers[message.op]
    const reply = (body: Reply) => { if (process.connected) process.send?.({ ...body, id: message.id }) }
    if (handler === undefined) return reply({ error: `unknown op ${message.op}` })
    Promise.resolve().then(() => handler(message)).then(reply, (err: unknown) => reply({ error: String(err) }))
  })
  // `exit` leaves normally, so --cpu-prof gets to write its profile.
  process.on('message', (message: Request & { id: number }) => {
    if (message.op === 'exit') setTimeout(() => process.exit(0), 10)
  })
  process.on('disconnect', () => process.exit(0))
}

/** Tells the parent something it did not ask for (`ready`). */
export function notify (message: Reply): void {
  process.send?.(message)
}
