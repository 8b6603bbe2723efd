// A small canvas chart of events per second over the last five minutes (one point a second).
const SECONDS = 300

export function createRateChart (canvas) {
  const series = new Array(SECONDS).fill(0)
  const ctx = canvas.getContext('2d')

  function push (value) {
    series.push(value)
    series.shift()
    draw()
  }

  function draw () {
    const ratio = window.devicePixelRatio || 1
    const width = canvas.clientWidth
    const height = canvas.clientHeight
    if (width === 0 || height === 0) return
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio)
      canvas.height = Math.round(height * ratio)
    }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0)
    ctx.clearRect(0, 0, width, height)

    const pad = { left: 36, right: 8, top: 10, bottom: 22 }
    const plotW = width - pad.left - pad.right
    const plotH = height - pad.top - pad.bottom
    const top = niceMax(Math.max(...series))
    const x = (i) => pad.left + (i / (SECONDS - 1)) * plotW
    const y = (v) => pad.top + plotH - (v / top) * plotH

    ctx.font = '11px ui-sans-serif, system-ui, sans-serif'
    ctx.fillStyle = '#6b7487'
    ctx.strokeStyle = '#eef1f6'
    ctx.lineWidth = 1
    ctx.textAlign = 'right'
    ctx.textBaseline = 'middle'
    for (let k = 0; k <= 4; k++) {
      const v = (top / 4) * k
      const gy = Math.round(y(v)) + 0.5
      ctx.beginPath()
      ctx.moveTo(pad.left, gy)
      ctx.lineTo(width - pad.right, gy)
      ctx.stroke()
      ctx.fillText(formatTick(v), pad.left - 6, gy)
    }
    ctx.textAlign = 'center'
    ctx.textBaseline = 'top'
    for (let m = 5; m >= 0; m--) {
      const i = SECONDS - 1 - m * 60
      ctx.fillText(m === 0 ? 'now' : `-${m}m`, Math.min(Math.max(x(Math.max(i, 0)), pad.left + 10), width - pad.right - 12), height - pad.bottom + 6)
    }

    const gradient = ctx.createLinearGradient(0, pad.top, 0, pad.top + plotH)
    gradient.addColorStop(0, 'rgba(79, 70, 229, 0.28)')
    gradient.addColorStop(1, 'rgba(79, 70, 229, 0.02)')
    ctx.beginPath()
    ctx.moveTo(x(0), y(series[0]))
    for (let i = 1; i < SECONDS; i++) ctx.lineTo(x(i), y(series[i]))
    ctx.lineTo(x(SECONDS - 1), y(0))
    ctx.lineTo(x(0), y(0))
    ctx.closePath()
    ctx.fillStyle = gradient
    ctx.fill()

    ctx.beginPath()
    ctx.moveTo(x(0), y(series[0]))
    for (let i = 1; i < SECONDS; i++) ctx.lineTo(x(i), y(series[i]))
    ctx.strokeStyle = '#4f46e5'
    ctx.lineWidth = 1.6
    ctx.lineJoin = 'round'
    ctx.stroke()
  }

  window.addEventListener('resize', draw)
  draw()
  return { push }
}

/** A round axis maximum at or above the data (at least 4, so an idle chart has a scale). */
function niceMax (value) {
  if (value <= 4) return 4
  const magnitude = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude
  return 10 * magnitude
}

const formatTick = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1))
