// Times in the merchant's time zone. The API speaks UTC (RFC 3339); the
// console shows and reads wall-clock times of the zone chosen in the top
// bar (Asia/Shanghai unless changed), whatever the browser's own zone.

export const DEFAULT_ZONE = 'Asia/Shanghai';

export const ZONES = [
  'Asia/Shanghai', 'Asia/Hong_Kong', 'Asia/Taipei', 'Asia/Singapore', 'Asia/Tokyo',
  'Asia/Seoul', 'Europe/London', 'Europe/Paris', 'America/New_York',
  'America/Los_Angeles', 'UTC',
];

function wallParts(ms, zone) {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const parts = {};
  for (const part of format.formatToParts(new Date(ms))) parts[part.type] = part.value;
  return parts;
}

/** How far `zone`'s wall clock is ahead of UTC at the instant `ms`. */
function offsetMs(ms, zone) {
  const p = wallParts(ms, zone);
  const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second);
  return wall - Math.floor(ms / 1000) * 1000;
}

/** `2026-11-11 08:00:00` in `zone`, from an RFC 3339 string or ms. */
export function formatInZone(instant, zone) {
  const ms = typeof instant === 'number' ? instant : Date.parse(instant);
  if (Number.isNaN(ms)) return String(instant);
  const p = wallParts(ms, zone);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

/** A `datetime-local` value (a wall time in `zone`) as RFC 3339 UTC; the
 *  value itself when it is not one, so the API names what is wrong. */
export function wallToUtc(value, zone) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(value);
  if (!m) return value;
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] ?? 0));
  // The offset at the guess, then at the answer (they differ only across
  // a daylight-saving change).
  let utc = wall - offsetMs(wall, zone);
  utc = wall - offsetMs(utc, zone);
  return new Date(utc).toISOString().replace('.000Z', 'Z');
}

/** An instant as a `datetime-local` value in `zone`. */
export function utcToWall(instant, zone) {
  const ms = typeof instant === 'number' ? instant : Date.parse(instant);
  const p = wallParts(ms, zone);
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}
