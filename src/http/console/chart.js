// The live chart of a sale: units taken per second and the engine's 429
// and 503 answers per second (left scale), and units remaining (right
// scale, up to the stock), one point per tick of the sale's live feed.
// Plain SVG built through the DOM, so the page's CSP needs no exception.

import { s, replace } from './dom.js';

const WIDTH = 720;
const HEIGHT = 240;
const PAD = { left: 48, right: 56, top: 16, bottom: 28 };
/** Points kept: ten minutes at one tick a second. */
const POINTS_MAX = 600;

const SERIES = [
  { key: 'sold', label: 'units sold / s', scale: 'rate' },
  { key: 'shed429', label: '429 / s', scale: 'rate' },
  { key: 'shed503', label: '503 / s', scale: 'rate' },
  { key: 'remaining', label: 'remaining', scale: 'stock' },
];

export const LEGEND = SERIES.map(({ key, label }) => ({ key, label }));

export class LiveChart {
  constructor(container, formatTime) {
    this.container = container;
    this.formatTime = formatTime;
    this.points = [];
    this.render();
  }

  /** Adds one tick: `{at, sold, shed429, shed503, remaining, stock}`. */
  push(point) {
    this.points.push(point);
    if (this.points.length > POINTS_MAX) this.points.shift();
    this.render();
  }

  render() {
    const points = this.points;
    const innerW = WIDTH - PAD.left - PAD.right;
    const innerH = HEIGHT - PAD.top - PAD.bottom;
    const rateMax = Math.max(1, ...points.flatMap((p) => [p.sold, p.shed429, p.shed503]));
    const stockMax = Math.max(1, ...points.map((p) => p.stock));
    const x = (i) => PAD.left + (points.length < 2 ? innerW : (i * innerW) / (points.length - 1));
    const y = (value, max) => PAD.top + innerH - (value / max) * innerH;
    const lines = SERIES.map(({ key, scale }) => {
      const max = scale === 'rate' ? rateMax : stockMax;
      const coords = points.map((p, i) => `${x(i).toFixed(1)},${y(p[key], max).toFixed(1)}`);
      return s('polyline', { class: `series series-${key}`, points: coords.join(' ') });
    });
    const last = points.at(-1);
    const svg = s('svg', {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: 'img',
      'aria-label': 'units sold per second, sheds per second and units remaining',
      'data-points': points.length,
      'data-sold-max': Math.max(0, ...points.map((p) => p.sold)),
      'data-remaining-last': last ? last.remaining : '',
    },
    s('rect', { class: 'plot', x: PAD.left, y: PAD.top, width: innerW, height: innerH }),
    s('text', { class: 'axis', x: PAD.left - 6, y: PAD.top + 4, 'text-anchor': 'end' }, fmt(rateMax)),
    s('text', { class: 'axis', x: PAD.left - 6, y: PAD.top + innerH, 'text-anchor': 'end' }, '0'),
    s('text', { class: 'axis', x: WIDTH - PAD.right + 6, y: PAD.top + 4 }, String(stockMax)),
    s('text', { class: 'axis', x: WIDTH - PAD.right + 6, y: PAD.top + innerH }, '0'),
    points.length > 0 && s('text', { class: 'axis', x: PAD.left, y: HEIGHT - 8 },
      this.formatTime(points[0].at)),
    points.length > 1 && s('text', { class: 'axis', x: WIDTH - PAD.right, y: HEIGHT - 8,
      'text-anchor': 'end' }, this.formatTime(last.at)),
    points.length === 0 && s('text', { class: 'axis', x: WIDTH / 2, y: HEIGHT / 2,
      'text-anchor': 'middle' }, 'waiting for the first tick…'),
    ...lines);
    replace(this.container, svg);
  }
}

function fmt(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
