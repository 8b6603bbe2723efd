// The live event log: newest first, filtered by category and text, pausable.
import { categoryOf, clock, summarize } from './format.js'

const MAX_ENTRIES = 300

export function createEventLog ({ list, empty, filter, search, pause }) {
  const entries = []
  let paused = false
  let missedWhilePaused = 0

  const matches = (entry) => {
    if (filter.value !== 'all' && entry.category !== filter.value) return false
    const text = search.value.trim().toLowerCase()
    return text === '' || entry.haystack.includes(text)
  }

  function row (entry) {
    const li = document.createElement('li')
    li.className = 'log-row'
    li.dataset.category = entry.category
    li.dataset.type = entry.event.type
    const cells = [
      ['log-time', clock(entry.event.ts)],
      ['log-type', entry.event.type],
      ['log-channel', `${entry.event.channel} #${entry.event.offset}`],
      ['log-summary', entry.summary]
    ]
    for (const [className, text] of cells) {
      const span = document.createElement('span')
      span.className = className
      span.textContent = text
      span.title = text
      li.append(span)
    }
    return li
  }

  function render () {
    list.replaceChildren(...entries.filter(matches).map(row))
    empty.hidden = list.children.length > 0
    pause.textContent = paused ? (missedWhilePaused > 0 ? `Resume (${missedWhilePaused} new)` : 'Resume') : 'Pause'
  }

  function add (event) {
    const summary = summarize(event)
    const entry = { event, summary, category: categoryOf(event.type), haystack: `${event.type} ${event.channel} ${summary}`.toLowerCase() }
    entries.unshift(entry)
    if (entries.length > MAX_ENTRIES) entries.pop()
    if (paused) {
      missedWhilePaused++
      pause.textContent = `Resume (${missedWhilePaused} new)`
      return
    }
    if (matches(entry)) {
      list.prepend(row(entry))
      while (list.children.length > MAX_ENTRIES) list.lastElementChild.remove()
      empty.hidden = true
    }
  }

  filter.addEventListener('change', render)
  search.addEventListener('input', render)
  pause.addEventListener('click', () => {
    paused = !paused
    missedWhilePaused = 0
    pause.setAttribute('aria-pressed', String(paused))
    render()
  })
  return { add }
}
