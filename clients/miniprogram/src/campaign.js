// A campaign's seckill page by the server clock: each round's countdown
// (the engine's `server_time` in the page says when it was read; the
// countdown is the client's server clock now, so a page kept for its
// max-age still counts down right), its reminder (the campaign's
// `remind_before_secs` before the round, when the merchant's webhook
// hears of it too), and the round the page shows.

import { saleCountdown } from './clock.js';

/** A reminder due this soon is given now: a timer that fires a little
 *  early must not put it off by a whole poll interval. */
export const REMINDER_EARLY_MS = 50;

/**
 * A round's countdown at `serverNowMs` with `msToReminder`: how long until
 * its reminder is due, 0 once due (until the round starts), `null` when
 * the campaign reminds of nothing or the round has started.
 */
function roundCountdown(campaign, round, serverNowMs) {
  const countdown = saleCountdown(round, serverNowMs);
  const remindMs = (campaign.remind_before_secs ?? 0) * 1000;
  const msToReminder = remindMs > 0 && countdown.phase === 'upcoming' ? Math.max(0, countdown.msToStart - remindMs) : null;
  return { ...countdown, msToReminder };
}

/**
 * The campaign's rounds, each with `countdown` `{ phase, msToStart,
 * msToEnd, msToReminder }` at `serverNowMs` (`phase`: the round's
 * `status`, moved on when the clock passes `starts_at` or `ends_at`;
 * `msToReminder`: see `roundCountdown`), and `current`: the index of the
 * live round, else of the next one, else of the last.
 */
export function campaignRounds(campaign, serverNowMs) {
  const rounds = campaign.rounds.map((round) => ({ ...round, countdown: roundCountdown(campaign, round, serverNowMs) }));
  let current = rounds.findIndex((round) => round.countdown.phase === 'live');
  if (current < 0) current = rounds.findIndex((round) => round.countdown.phase === 'upcoming');
  if (current < 0) current = rounds.length - 1;
  return { rounds, current };
}

/** Whether every round has ended by `serverNowMs`: nothing on the page changes any more. */
export function campaignOver(campaign, serverNowMs) {
  return campaignRounds(campaign, serverNowMs).rounds.every((round) => round.countdown.phase === 'ended');
}

/** A sale id of the campaign (the first round's first item), to sync the server clock with. */
export function campaignSaleId(campaign) {
  return campaign.rounds[0]?.items[0]?.sale_id;
}

/**
 * The reminders a watch owes, from `rounds` as `campaignRounds` counts
 * them down: `due`, the rounds whose reminder is due (or
 * `REMINDER_EARLY_MS` from it) and not yet in `given` (a set of
 * `number:starts_at` keys, so a round moved is reminded again), each as
 * `{ number, starts_at, msToStart }`, added to `given`; and `msToNext`, how
 * long until the next one is due (`Infinity`: none).
 */
export function dueReminders(rounds, given) {
  const due = [];
  let msToNext = Infinity;
  for (const round of rounds) {
    const { msToReminder, msToStart } = round.countdown;
    if (msToReminder === null) continue;
    const key = `${round.number}:${round.starts_at}`;
    if (msToReminder > REMINDER_EARLY_MS) {
      msToNext = Math.min(msToNext, msToReminder);
    } else if (!given.has(key)) {
      given.add(key);
      due.push({ number: round.number, starts_at: round.starts_at, msToStart });
    }
  }
  return { due, msToNext };
}
