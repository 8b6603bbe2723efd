/**
 * Collects the items asked for in one turn of the event loop and runs them together at its
 * end (setImmediate): one call, so one socket write, for what would have been one each.
 * Every caller's promise settles with the batch's outcome.
 */
export function turnBatched<T> (run: (items: T[]) => Promise<unknown>): (item: T) => Promise<void> {
  let items: T[] = []
  let settled: Promise<void> | null = null
  return async (item: T): Promise<void> => {
    items.push(item)
    settled ??= new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
      const batch = items
      items = []
      settled = null
      await run(batch)
    })
    await settled
  }
}
