// Orders by status and revenue, folded from admin:order:* events (one entry per order).
import { count, money } from './format.js'

const STATUS_ORDER = ['created', 'pending', 'paid', 'shipped', 'delivered', 'cancelled']
const EARNING = new Set(['paid', 'shipped', 'delivered', 'completed'])

export function createOrderBook ({ list, empty, total, totalSub, revenue, averageOrder, cancelRate }) {
  const orders = new Map()
  let currency = 'USD'

  function apply (event) {
    const p = event.payload ?? {}
    if (p.orderId === undefined) return
    const id = String(p.orderId)
    const known = orders.get(id) ?? { status: 'created', total: undefined }
    const change = event.type.split(':').pop()
    known.status = change === 'cancelled' ? 'cancelled' : (p.status ?? (change === 'created' ? 'created' : known.status))
    if (typeof p.total === 'number') known.total = p.total
    if (typeof p.currency === 'string') currency = p.currency
    orders.set(id, known)
    render()
  }

  function render () {
    const byStatus = new Map()
    let earned = 0
    let earning = 0
    for (const order of orders.values()) {
      byStatus.set(order.status, (byStatus.get(order.status) ?? 0) + 1)
      if (EARNING.has(order.status) && order.total !== undefined) {
        earned += order.total
        earning++
      }
    }
    const cancelled = byStatus.get('cancelled') ?? 0
    averageOrder.textContent = earning === 0 ? '–' : money(earned / earning, currency)
    cancelRate.textContent = orders.size === 0 ? '–' : `${((cancelled / orders.size) * 100).toFixed(1)} %`
    total.textContent = count(orders.size)
    totalSub.textContent = `${count(cancelled)} cancelled · this session`
    revenue.textContent = money(earned, currency)

    const statuses = [...byStatus.keys()].sort((a, b) => rank(a) - rank(b))
    const max = Math.max(1, ...byStatus.values())
    list.replaceChildren(...statuses.map((status) => bar(status, byStatus.get(status), max)))
    empty.hidden = orders.size > 0
  }

  render()
  return { apply }
}

function rank (status) {
  const i = STATUS_ORDER.indexOf(status)
  return i < 0 ? STATUS_ORDER.length : i
}

function bar (status, n, max) {
  const row = document.createElement('li')
  row.className = 'bar-row'
  row.dataset.status = status
  const label = document.createElement('span')
  label.className = 'bar-label'
  label.textContent = status
  const track = document.createElement('span')
  track.className = 'bar-track'
  const fill = document.createElement('span')
  fill.className = 'bar-fill'
  fill.dataset.status = status
  fill.style.width = `${(n / max) * 100}%`
  track.append(fill)
  const value = document.createElement('span')
  value.className = 'bar-count'
  value.textContent = count(n)
  row.append(label, track, value)
  return row
}
