// A campaign's seckill page by the server clock: each round's countdown
// (the engine's `server_time` in the page says when it was read; the
// countdown is the client's server clock now, so a page kept for its
// max-age still counts down right), and the round the page shows.

import { saleCountdown } from './clock.js';

/**
 * The campaign's rounds, each with `countdown` `{ phase, msToStart,
 * msToEnd }` at `serverNowMs` (`phase`: the round's `status`, moved on
 * when the clock passes `starts_at` or `ends_at`), and `current`: the
 * index of the live round, else of the next one, else of the last.
 */
export function campaignRounds(campaign, serverNowMs) {
  const rounds = campaign.rounds.map((round) => ({ ...round, countdown: saleCountdown(round, serverNowMs) }));
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
