// The merchant console: sign in with the admin token, then sales (list,
// schedule, with or without a waiting room, one sale live with its
// actions, its waiting room's line, audit, orders and dead letters), one
// order (found by its id: its WeChat Pay ids, a refund, and a refund paid
// back by hand), campaigns
// (list, schedule, one campaign's rounds × items with their counts, a
// round ended now, an item's stock, a round moved or added, the campaign
// cancelled before it starts) and payment
// exceptions, all through the admin API. Views are picked by the URL's
// fragment: #/sales, #/new, #/sales/{id}, #/orders/{id}, #/campaigns,
// #/campaigns/new, #/campaigns/{id}, #/payment-exceptions.

import { ApiError, call, follow, forgetToken, saveToken, savedToken } from './api.js';
import { LEGEND, LiveChart } from './chart.js';
import { h, replace } from './dom.js';
import { DEFAULT_ZONE, ZONES, formatInZone, utcToWall, wallToUtc } from './time.js';

const ZONE_KEY = 'flashsale.time_zone';
const view = document.getElementById('view');
const signIn = document.getElementById('sign-in');
const topbar = document.getElementById('topbar');
const zoneSelect = document.getElementById('time-zone');

/** What the current view must stop when the merchant leaves it. */
let leaving = new AbortController();

const zone = () => zoneSelect.value || DEFAULT_ZONE;
const when = (instant) => formatInZone(instant, zone());

// ---- errors at their fields ----------------------------------------------

/** The fields an API message may name, likeliest first: `stock_total:
 *  must be ...`, `admission.admit_per_sec: ...`, `items[1].sku: ...` (the
 *  item's field), ``missing field `stock_total` ``, or `stock_total cannot
 *  go below ...` (a refusal of a change). */
function fieldsOf(message) {
  return [/^([a-z_]+\.[a-z_]+):/, /^([a-z_]+)(?:\[\d+\])?:/, /^[a-z_]+\[\d+\]\.([a-z_]+)/,
    /`([a-z_]+)`/, /^([a-z]+_[a-z_]+) /]
    .map((pattern) => pattern.exec(message)?.[1])
    .filter(Boolean);
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll('[data-error-for]')) slot.textContent = '';
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
}

/** Shows an API error at the form field it names, else at the form. A
 *  slot takes the errors of every name in its `data-error-for` (a table
 *  of rows: `items sku title ...`). */
function showError(form, err) {
  const message = err instanceof ApiError ? err.message : String(err);
  const field = fieldsOf(message)
    .find((name) => form.querySelector(`[data-error-for~="${name}"]`));
  let slot = form.querySelector(`[data-error-for~="${field ?? 'form'}"]`);
  // A field the form hides (the waiting room's settings in the race):
  // the message goes to the form's own slot, where it is seen.
  if (slot.closest('[hidden]')) slot = form.querySelector('[data-error-for~="form"]');
  slot.textContent = message;
  const input = field && form.elements.namedItem(field);
  if (input instanceof Element) input.setAttribute('aria-invalid', 'true');
}

/** Runs `action` for a form's submit, showing what the API refused. */
function onSubmit(form, action) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await action(form.elements);
    } catch (err) {
      if (!signedOut(err)) showError(form, err);
    } finally {
      button.disabled = false;
    }
  });
}

/** A refused token (revoked, or the engine restarted with another) sends
 *  the merchant back to sign in. */
function signedOut(err) {
  if (err instanceof ApiError && err.status === 401) {
    showSignIn(`Signed out: ${err.message}`);
    return true;
  }
  return false;
}

function field(label, name, input, hint) {
  input.name = name;
  input.id = `field-${name}`;
  return h('div', { class: 'field' },
    h('label', { for: input.id }, label),
    input,
    hint && h('small', {}, hint),
    h('p', { class: 'field-error', 'data-error-for': name }));
}

const formError = () => h('p', { class: 'field-error form-error', 'data-error-for': 'form' });

function statusBadge(status) {
  return h('span', { class: 'status', 'data-status': status }, status.replace('_', ' '));
}

/** An amount in minor units, with as many decimals as the currency has
 *  (2 for CNY, 0 for JPY; 2 for a code the browser does not know). */
function money(minor, currency) {
  let digits = 2;
  try {
    digits = new Intl.NumberFormat('en', { style: 'currency', currency })
      .resolvedOptions().maximumFractionDigits;
  } catch {
    // Not a currency code the browser knows.
  }
  return `${(minor / 10 ** digits).toFixed(digits)} ${currency}`;
}

/** Items asked for per page of a listing (the API's own default). */
const PAGE = 50;

/** A listing read a page at a time: `rows` (a tbody) gets a row per item
 *  (`row(item)`), `more` is a button shown while the API names a next
 *  page, which it appends; `reload()` reads the first page again and
 *  resolves to its items. What a press of `more` is refused goes to
 *  `failed`. */
function paged(path, key, row, failed) {
  const rows = h('tbody');
  const more = h('button', { type: 'button', class: 'quiet more', hidden: true }, 'More');
  let next = null;
  async function read(cursor) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (cursor !== null) query.set('cursor', cursor);
    const page = await call('GET', `${path}?${query}`);
    const items = page[key];
    if (cursor === null) replace(rows, items.map(row));
    else rows.append(...items.map(row));
    next = page.next_cursor;
    more.hidden = next === null;
    return items;
  }
  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      await read(next);
    } catch (err) {
      if (!signedOut(err)) failed(err);
    } finally {
      more.disabled = false;
    }
  });
  return { rows, more, reload: () => read(null) };
}

// ---- sign in -------------------------------------------------------------

function showSignIn(message = '') {
  leaving.abort();
  forgetToken();
  topbar.hidden = true;
  replace(view);
  signIn.hidden = false;
  const form = document.getElementById('sign-in-form');
  clearErrors(form);
  form.querySelector('[data-error-for="token"]').textContent = message;
  form.elements.token.value = '';
  form.elements.token.focus();
}

function setUpSignIn() {
  const form = document.getElementById('sign-in-form');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const token = form.elements.token.value.trim();
    try {
      // Any admin read proves the token; nothing is kept from it.
      await call('GET', '/admin/v1/payment-exceptions', undefined, token);
    } catch (err) {
      showError(form, err.status === 401 || err.status === 403 || err.status === 429
        ? new ApiError(err.status, err.code, `token: ${err.message}`)
        : err);
      return;
    }
    saveToken(token);
    form.elements.token.value = '';
    signIn.hidden = true;
    topbar.hidden = false;
    if (location.hash === '' || location.hash === '#/') location.hash = '#/sales';
    else route();
  });
}

// ---- sales list ----------------------------------------------------------

async function showSales() {
  const note = h('p', { class: 'muted' });
  const listing = paged('/admin/v1/sales', 'sales', (sale) => h('tr', { 'data-sale-id': sale.id },
    h('td', {}, h('a', { href: `#/sales/${sale.id}` }, sale.title), h('br'),
      h('small', { class: 'muted' }, `${sale.sku} · ${sale.id}`)),
    h('td', {}, statusBadge(sale.status)),
    h('td', {}, when(sale.starts_at), h('br'), h('small', {}, `to ${when(sale.ends_at)}`)),
    h('td', { class: 'num' }, `${sale.stats.remaining} / ${sale.stats.stock_total}`),
    h('td', { class: 'num' }, sale.stats.reserved),
    h('td', { class: 'num' }, sale.stats.paid)), (err) => { note.textContent = err.message; });
  const table = h('table', { id: 'sales-table' },
    h('thead', {}, h('tr', {},
      ['Sale', 'Status', `Window (${zone()})`, 'Remaining / stock', 'Reserved', 'Paid']
        .map((title) => h('th', {}, title)))),
    listing.rows);
  const refresh = h('button', { type: 'button', class: 'quiet', onclick: () => load() }, 'Refresh');
  replace(view, h('section', { class: 'card' },
    h('div', { class: 'heading' }, h('h2', {}, 'Sales'), refresh,
      h('a', { class: 'button', href: '#/new' }, 'Schedule a sale')),
    table, listing.more, note));
  async function load() {
    try {
      const sales = await listing.reload();
      note.textContent = sales.length === 0
        ? 'No sales yet.'
        : `Counts as of ${when(Date.now())}; open a sale to follow it live.`;
    } catch (err) {
      if (!signedOut(err)) note.textContent = err.message;
    }
  }
  await load();
}

// ---- schedule a sale -----------------------------------------------------

/** The numbers typed in the fields `prefix + name` of `names`, by name,
 *  as typed: an empty field is left out (the API's default), and the API
 *  names whatever is wrong, at its field. */
function typedNumbers(fields, names, prefix = '') {
  const numbers = {};
  for (const name of names) {
    const raw = fields.namedItem(prefix + name).value.trim();
    if (raw !== '') numbers[name] = Number(raw);
  }
  return numbers;
}

/** The admission select and the waiting room's three settings (shown
 *  for `queue` only), filled from `admission` when given (a sale's view);
 *  `read(fields)` is the body's `admission`: a box left empty takes the
 *  API's default. */
function admissionFields(admission) {
  const number = (name, placeholder) => h('input',
    { type: 'number', min: 0, step: 1, placeholder, value: admission?.[name] ?? '' });
  const queueFields = h('fieldset', { class: 'grid waiting-room-fields' },
    h('legend', {}, 'Waiting room (empty: the default)'),
    field('Pre-queue opens (s before the start)', 'admission.prequeue_opens_secs',
      number('prequeue_opens_secs', 600)),
    field('Admitted per second', 'admission.admit_per_sec', number('admit_per_sec', 500)),
    field('An admission lasts (s)', 'admission.token_ttl_secs', number('token_ttl_secs', 60)));
  const select = h('select', {},
    h('option', { value: 'open' }, 'open: the race'),
    h('option', { value: 'queue' }, 'queue: a waiting room'));
  select.value = admission?.mode ?? 'open';
  const showQueueFields = () => { queueFields.hidden = select.value !== 'queue'; };
  select.addEventListener('change', showQueueFields);
  showQueueFields();
  // The settings go in either mode: a sale switched to the race keeps them
  // for a switch back.
  const read = (fields) => ({
    mode: fields.admission_mode.value,
    ...typedNumbers(fields, ADMISSION_NUMBERS, 'admission.'),
  });
  const mode = field('Admission', 'admission_mode', select);
  // What the API says of the admission as a whole is shown here.
  mode.querySelector('[data-error-for]').dataset.errorFor =
    'admission_mode admission.mode admission';
  return { mode, queueFields, read };
}

const ADMISSION_NUMBERS = ['prequeue_opens_secs', 'admit_per_sec', 'token_ttl_secs'];

function showNewSale() {
  const now = Date.now();
  const input = (type, attrs = {}) => h('input', { type, ...attrs });
  const admission = admissionFields();
  const form = h('form', { id: 'new-sale-form', novalidate: true },
    h('div', { class: 'grid' },
      field('SKU', 'sku', input('text', { required: true })),
      field('Title', 'title', input('text', { required: true })),
      field('Price (cents)', 'price_cents', input('number', { min: 0, step: 1 }),
        'minor units: 19900 is 199.00'),
      field('Currency', 'currency', input('text', { value: 'CNY', maxlength: 3 })),
      field('Stock', 'stock_total', input('number', { min: 1, step: 1 })),
      field('Per-shopper limit', 'per_user_limit', input('number', { value: 1, min: 1, step: 1 })),
      field('Payment timeout (s)', 'payment_timeout_secs',
        input('number', { value: 900, min: 1, step: 1 })),
      field(`Starts (${zone()})`, 'starts_at',
        input('datetime-local', { value: utcToWall(now + 10 * 60_000, zone()) })),
      field(`Ends (${zone()})`, 'ends_at',
        input('datetime-local', { value: utcToWall(now + 70 * 60_000, zone()) })),
      purchaseTokenBox(false),
      admission.mode),
    admission.queueFields,
    formError(),
    h('button', { type: 'submit' }, 'Schedule'));
  onSubmit(form, async (fields) => {
    const body = {
      sku: fields.sku.value,
      title: fields.title.value,
      currency: fields.currency.value,
      starts_at: wallToUtc(fields.starts_at.value, zone()),
      ends_at: wallToUtc(fields.ends_at.value, zone()),
      require_purchase_token: fields.require_purchase_token.checked,
      admission: admission.read(fields),
    };
    Object.assign(body, typedNumbers(fields,
      ['price_cents', 'stock_total', 'per_user_limit', 'payment_timeout_secs']));
    const sale = await call('POST', '/admin/v1/sales', body);
    location.hash = `#/sales/${sale.id}`;
  });
  replace(view, h('section', { class: 'card' }, h('h2', {}, 'Schedule a sale'), form));
}

function purchaseTokenBox(checked) {
  return h('div', { class: 'field' }, h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'require_purchase_token', checked }),
    ' Require a purchase token'),
  h('p', { class: 'field-error', 'data-error-for': 'require_purchase_token' }));
}

// ---- one sale, live ------------------------------------------------------

const STATS = ['remaining', 'reserved', 'paid', 'cancelled', 'expired', 'refund_required',
  'refunded', 'restocked', 'queued', 'buyers'];

async function showSale(id) {
  const { signal } = leaving;
  let sale;
  try {
    sale = await call('GET', `/admin/v1/sales/${encodeURIComponent(id)}`);
  } catch (err) {
    if (!signal.aborted && !signedOut(err)) {
      replace(view, h('section', { class: 'card' }, h('p', {}, err.message)));
    }
    return;
  }
  // The merchant went elsewhere while the sale was read.
  if (signal.aborted) return;
  const title = h('h2', { id: 'sale-title' });
  const status = h('span', { id: 'sale-status' });
  const facts = h('p', { class: 'muted', id: 'sale-facts' });
  const stats = Object.fromEntries(STATS.map((name) => [name, h('dd', { 'data-stat': name })]));
  const feed = h('span', { id: 'feed-state', class: 'muted' }, 'connecting…');
  const clock = h('span', { id: 'sale-clock', class: 'muted' });
  const chartBox = h('div', { id: 'chart', class: 'chart' });
  const chart = new LiveChart(chartBox, (ms) => formatInZone(ms, zone()).slice(11));

  let actions = null;
  let storeNow = null; // the store's clock at the last tick
  const waitingRoom = waitingRoomPanel();
  function show(current) {
    sale = current;
    actions?.update(current.status);
    clock.textContent = storeNow === null ? '' : countdown(current, storeNow);
    title.textContent = current.title;
    replace(status, statusBadge(current.status));
    facts.textContent = `${current.sku} · ${money(current.price_cents, current.currency)} · `
      + `${when(current.starts_at)} → ${when(current.ends_at)} (${zone()}) · `
      + `limit ${current.per_user_limit} per shopper · stock ${current.stats.stock_total}`;
    for (const name of STATS) stats[name].textContent = current.stats[name];
    waitingRoom.update(current);
  }
  actions = saleActions(id, () => sale, show);
  show(sale);
  replace(view,
    h('section', { class: 'card' },
      h('div', { class: 'heading' }, title, clock, status),
      facts,
      h('dl', { class: 'stats' }, STATS.map((name) => h('div', {},
        h('dt', {}, name.replace('_', ' ')), stats[name])))),
    h('section', { class: 'card' },
      h('div', { class: 'heading' }, h('h3', {}, 'Live'), feed),
      chartBox,
      h('ul', { class: 'legend' }, LEGEND.map(({ key, label }) =>
        h('li', { class: `key-${key}` }, label)))),
    actions.section,
    waitingRoom.section,
    auditPanel(id),
    ordersPanel(id),
    deadLetterPanel(id));

  followSale(id, signal, feed, (event) => {
    storeNow = Date.parse(event.at);
    show(event.sale);
    waitingRoom.update(event.sale, event.queue);
    chart.push({
      at: Date.parse(event.at),
      sold: event.sold_per_sec,
      shed429: event.shed_429_per_sec,
      shed503: event.shed_503_per_sec,
      remaining: event.sale.stats.remaining,
      stock: event.sale.stats.stock_total,
    });
  });
}

const LINE_COUNTS = ['joined', 'waiting', 'admitted', 'bought', 'expired', 'outstanding'];

/** A queued sale's waiting room: its settings, and its line in counts as
 *  each tick of the live feed reads them; hidden while the sale is open
 *  (a sale may switch before its start). */
function waitingRoomPanel() {
  const settings = h('p', { class: 'muted', id: 'waiting-room-settings' });
  const counts = Object.fromEntries(LINE_COUNTS.map((name) =>
    [name, h('dd', { 'data-line': name }, '—')]));
  /** Shows the sale's settings, and with a tick the line's counts (`null`:
   *  the tick could not read them). */
  const update = (sale, line) => {
    const { admission } = sale;
    section.hidden = admission.mode !== 'queue';
    if (section.hidden) return;
    settings.textContent = `pre-queue from ${when(admission.prequeue_opens_at)} (${zone()}) · `
      + `${admission.admit_per_sec} admitted per second · an admission lasts `
      + `${admission.token_ttl_secs} s · seed SHA-256 ${admission.seed_sha256}`
      + (admission.seed ? ` · seed ${admission.seed}` : ' · seed shown at the opening');
    if (line === undefined) return;
    for (const name of LINE_COUNTS) counts[name].textContent = line ? line[name] : '—';
  };
  const section = h('section', { class: 'card', id: 'waiting-room' },
    h('h3', {}, 'Waiting room'),
    settings,
    h('dl', { class: 'stats' }, LINE_COUNTS.map((name) => h('div', {},
      h('dt', {}, name), counts[name]))),
    h('p', { class: 'muted' }, 'Admissions are granted, and lapsed ones freed, as shoppers\' '
      + 'polls reach the engine: outstanding is who may order now (and lapsed admissions not '
      + 'freed yet); bought, whose admission ordered; expired, whose admission lapsed and was '
      + 'freed (they left the line).'));
  return { section, update };
}

/** How long until the sale opens or closes, by the store's clock `now`
 *  (the feed's tick), whatever the browser's own clock says. */
function countdown(sale, now) {
  const left = (until) => {
    const secs = Math.max(0, Math.round((Date.parse(until) - now) / 1000));
    const [d, hr, m, sec] = [Math.floor(secs / 86400), Math.floor(secs / 3600) % 24,
      Math.floor(secs / 60) % 60, secs % 60];
    return (d ? `${d}d ` : '') + (d || hr ? `${hr}h ` : '') + `${m}m ${sec}s`;
  };
  if (sale.status === 'upcoming') return `opens in ${left(sale.starts_at)}`;
  if (sale.status === 'live' || sale.status === 'sold_out') return `ends in ${left(sale.ends_at)}`;
  return '';
}

/** Follows the sale's live feed until `signal` aborts, reconnecting after
 *  a dropped stream or a refused one (say, too many consoles watching). */
async function followSale(id, signal, feed, onStats) {
  let wait = 1000;
  while (!signal.aborted) {
    try {
      await follow(`/admin/v1/sales/${encodeURIComponent(id)}/events`, ({ event, data }) => {
        wait = 1000;
        if (event === 'stats') {
          feed.textContent = `tick ${data.seq} at ${when(data.at).slice(11)}`;
          onStats(data);
        } else if (event === 'unavailable') {
          feed.textContent = `store unavailable at this tick: ${data.error.message}`;
        }
      }, signal);
      if (!signal.aborted) feed.textContent = 'the engine closed the feed; reconnecting…';
    } catch (err) {
      if (signal.aborted) return;
      if (signedOut(err)) return;
      feed.textContent = `${err.message}; reconnecting…`;
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 30_000);
  }
}

/** A button that acts only when pressed twice within five seconds. */
function confirmButton(id, label, action) {
  let armed = null;
  const button = h('button', { type: 'button', id, class: 'danger' }, label);
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = `${label}: press again to confirm`;
      armed = setTimeout(() => { armed = null; button.textContent = label; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    await action();
  });
  return button;
}

function saleActions(id, current, show) {
  const path = `/admin/v1/sales/${encodeURIComponent(id)}`;
  const patch = async (body) => show(await call('PATCH', path, body));
  const place = current().campaign;
  if (place) {
    const section = h('section', { class: 'card', id: 'actions' },
      h('h3', {}, 'Change the sale'),
      h('p', { id: 'campaign-place' }, `Round ${place.round}, item ${place.item} of campaign `,
        h('a', { href: `#/campaigns/${encodeURIComponent(place.campaign_id)}` },
          place.campaign_id), ': it changes with its campaign.'));
    return { section, update: () => {} };
  }

  const stock = h('form', { id: 'stock-form', class: 'inline', novalidate: true },
    field('Stock total', 'stock_total', h('input', { type: 'number', min: 1, step: 1 }),
      'more while live; never below what is held or paid'),
    formError(), h('button', { type: 'submit' }, 'Set stock'));
  onSubmit(stock, (fields) => patch({ stock_total: Number(fields.stock_total.value) }));

  const end = h('form', { id: 'ends-form', class: 'inline', novalidate: true },
    field(`Ends (${zone()})`, 'ends_at', h('input', { type: 'datetime-local' })),
    formError(), h('button', { type: 'submit' }, 'Move the end'));
  end.elements.ends_at.value = utcToWall(current().ends_at, zone());
  onSubmit(end, (fields) => patch({ ends_at: wallToUtc(fields.ends_at.value, zone()) }));

  const outcome = h('p', { class: 'field-error', 'data-error-for': 'form' });
  const endNow = confirmButton('end-now', 'End now', guarded(() => patch({ status: 'ended' })));
  const cancel = confirmButton('cancel-sale', 'Cancel the sale',
    guarded(async () => show(await call('DELETE', path))));
  function guarded(action) {
    return async () => {
      outcome.textContent = '';
      try {
        await action();
      } catch (err) {
        if (!signedOut(err)) outcome.textContent = err.message;
      }
    };
  }
  const terms = saleTerms(current(), patch);
  const section = h('section', { class: 'card', id: 'actions' },
    h('h3', {}, 'Change the sale'),
    h('div', { class: 'row' }, stock, end),
    terms,
    h('div', { class: 'row' }, endNow, cancel),
    outcome);
  // What the sale's phase allows: anything before the start (and cancel),
  // more stock, a later end or the end now while live, nothing after.
  const update = (status) => {
    const open = status === 'live' || status === 'sold_out';
    section.hidden = status === 'ended' || status === 'cancelled';
    endNow.hidden = !open;
    cancel.hidden = status !== 'upcoming';
    terms.hidden = status !== 'upcoming';
  };
  return { section, update };
}

/** Before the start (the API refuses it after): the sale's terms and
 *  admission, filled with the sale as the page read it. A submit sends, as
 *  one PATCH, only what the merchant changed in the form (an emptied number
 *  box sends nothing; an emptied text is refused by the API at its field);
 *  the admission goes whole when any of it changed (an emptied setting:
 *  the API's default). */
function saleTerms(sale, patch) {
  const number = (value, min) => h('input', { type: 'number', min, step: 1, value });
  const admission = admissionFields(sale.admission);
  const form = h('form', { id: 'sale-terms-form', novalidate: true },
    h('h4', {}, 'Before the start'),
    h('div', { class: 'grid' },
      field('Title', 'title', h('input', { type: 'text', value: sale.title })),
      field('Price (cents)', 'price_cents', number(sale.price_cents, 0)),
      field('Per-shopper limit', 'per_user_limit', number(sale.per_user_limit, 1)),
      field('Payment timeout (s)', 'payment_timeout_secs', number(sale.payment_timeout_secs, 1)),
      field(`Starts (${zone()})`, 'starts_at', h('input',
        { type: 'datetime-local', value: utcToWall(sale.starts_at, zone()) })),
      purchaseTokenBox(sale.require_purchase_token),
      admission.mode),
    admission.queueFields,
    formError(),
    h('button', { type: 'submit' }, 'Change the sale'));
  const valueOf = (input) => (input.type === 'checkbox' ? input.checked : input.value);
  const named = () => [...form.elements].filter((input) => input.name);
  let filled = new Map(named().map((input) => [input.name, valueOf(input)]));
  onSubmit(form, async (fields) => {
    const changed = named().filter((input) => valueOf(input) !== filled.get(input.name))
      .map((input) => input.name);
    const body = typedNumbers(fields,
      ['price_cents', 'per_user_limit', 'payment_timeout_secs'].filter((name) =>
        changed.includes(name)));
    if (changed.includes('title')) body.title = fields.title.value;
    if (changed.includes('starts_at')) {
      body.starts_at = wallToUtc(fields.starts_at.value, zone());
    }
    if (changed.includes('require_purchase_token')) {
      body.require_purchase_token = fields.require_purchase_token.checked;
    }
    if (changed.some((name) => name.startsWith('admission'))) {
      body.admission = admission.read(fields);
    }
    if (changed.length > 0) await patch(body);
    filled = new Map(named().map((input) => [input.name, valueOf(input)]));
  });
  return form;
}

function auditPanel(id) {
  const result = h('div', { id: 'audit-result' });
  const run = h('button', { type: 'button', id: 'run-audit' }, 'Run the audit');
  run.addEventListener('click', async () => {
    replace(result, h('p', { class: 'muted' }, 'auditing…'));
    try {
      const audit = await call('GET', `/admin/v1/sales/${encodeURIComponent(id)}/audit`);
      replace(result,
        h('p', { class: audit.ok ? 'ok' : 'bad', 'data-audit-ok': String(audit.ok) },
          audit.ok ? `No difference (checked ${when(audit.checked_at)}).`
            : `${audit.differences.length} difference(s) (checked ${when(audit.checked_at)}):`),
        audit.differences.length > 0 && h('table', {},
          h('thead', {}, h('tr', {}, h('th', {}, 'Check'), h('th', {}, 'Detail'))),
          h('tbody', {}, audit.differences.map((d) =>
            h('tr', {}, h('td', {}, d.check), h('td', {}, d.detail))))));
    } catch (err) {
      if (!signedOut(err)) replace(result, h('p', { class: 'bad' }, err.message));
    }
  });
  return h('section', { class: 'card' },
    h('div', { class: 'heading' }, h('h3', {}, 'Audit'), run),
    h('p', { class: 'muted' }, 'Recounts every order of the sale in one read: for checking, '
      + 'not for watching a race.'),
    result);
}

function deadLetterPanel(id) {
  const path = `/admin/v1/sales/${encodeURIComponent(id)}/dead-letters`;
  const body = h('div', { id: 'dead-letters' });
  const failed = (err) => replace(body, h('p', { class: 'bad' }, err.message));
  const listing = paged(path, 'dead_letters', (l) => h('tr', {},
    h('td', {}, l.order_id ?? 'none (round reminder)'), h('td', {}, l.event),
    h('td', { class: 'num' }, l.attempts), h('td', {}, l.last_status ?? 'no answer'),
    h('td', {}, l.last_error), h('td', {}, when(l.dead_lettered_at))), failed);
  const table = h('table', {},
    h('thead', {}, h('tr', {}, ['Order', 'Event', 'Attempts', 'Last status', 'Last error',
      `Dead since (${zone()})`].map((t) => h('th', {}, t)))),
    listing.rows);
  const load = async () => {
    try {
      const letters = await listing.reload();
      replace(body, letters.length === 0
        ? h('p', { class: 'muted' }, 'None: every hand-off and refund call was sent or is '
          + 'still being tried.')
        : [table, listing.more]);
    } catch (err) {
      if (!signedOut(err)) failed(err);
    }
  };
  const redrive = h('button', { type: 'button', class: 'quiet' }, 'Re-drive all');
  redrive.addEventListener('click', async () => {
    redrive.disabled = true;
    try {
      const { redriven } = await call('POST', `${path}/redrive`);
      replace(body, h('p', {}, `${redriven} entr${redriven === 1 ? 'y' : 'ies'} back in the outbox.`));
      setTimeout(load, 1500);
    } catch (err) {
      if (!signedOut(err)) failed(err);
    } finally {
      redrive.disabled = false;
    }
  });
  load();
  return h('section', { class: 'card' },
    h('div', { class: 'heading' }, h('h3', {}, 'Dead letters'), redrive), body);
}

// ---- orders --------------------------------------------------------------

/** A sale's orders, read on demand (the export reads the store a page at a
 *  time: for checking a sale, not for watching a race). */
function ordersPanel(id) {
  const body = h('div', { id: 'sale-orders' });
  const failed = (err) => replace(body, h('p', { class: 'bad' }, err.message));
  const listing = paged(`/admin/v1/sales/${encodeURIComponent(id)}/orders`, 'orders', (o) =>
    h('tr', { 'data-order-id': o.id },
      h('td', {}, h('a', { href: `#/orders/${o.id}` }, o.id)), h('td', {}, o.user_id),
      h('td', { class: 'num' }, o.quantity), h('td', { class: 'num' }, money(o.amount_cents, o.currency)),
      h('td', {}, statusBadge(o.status)), h('td', {}, when(o.created_at))), failed);
  const show = h('button', { type: 'button', id: 'show-orders', class: 'quiet' }, 'Show the orders');
  show.addEventListener('click', async () => {
    show.disabled = true;
    try {
      const orders = await listing.reload();
      // A page of the export may come empty with more after it.
      replace(body, orders.length === 0 && listing.more.hidden ? h('p', { class: 'muted' }, 'No orders.')
        : [h('table', {}, h('thead', {}, h('tr', {}, ['Order', 'Shopper', 'Quantity', 'Amount',
          'Status', `Made (${zone()})`].map((t) => h('th', {}, t)))), listing.rows), listing.more]);
    } catch (err) {
      if (!signedOut(err)) failed(err);
    } finally {
      show.disabled = false;
    }
  });
  return h('section', { class: 'card' },
    h('div', { class: 'heading' }, h('h3', {}, 'Orders'), show), body);
}

/** One order: what the shopper bought, its WeChat Pay ids, and its refund. */
async function showOrder(id) {
  const { signal } = leaving;
  const path = `/admin/v1/orders/${encodeURIComponent(id)}`;
  const outcome = h('p', { class: 'field-error', 'data-error-for': 'form' });
  const body = h('div');
  const answerWith = (send) => async () => {
    outcome.textContent = '';
    try {
      show(await send());
    } catch (err) {
      if (!signedOut(err)) outcome.textContent = err.message;
    }
  };
  const refund = (restock) => answerWith(() => call('POST', `${path}/refund`, { restock }));
  const byHand = answerWith(() => call('POST', `${path}/refund/settled-by-hand`));
  function show(order) {
    const facts = [
      ['Sale', h('a', { href: `#/sales/${order.sale_id}` }, order.sale_id)],
      ['Shopper', order.user_id],
      ['Quantity', order.quantity],
      ['Amount', money(order.amount_cents, order.currency)],
      [`Made (${zone()})`, when(order.created_at)],
      [`Pay by (${zone()})`, when(order.expires_at)],
      [`Paid (${zone()})`, order.paid_at ? when(order.paid_at) : '—'],
      ['WeChat Pay prepay id', order.prepay_id ?? '—'],
      ['Transaction id', order.transaction_id ?? '—'],
      ['Refund', order.refund ?? '—'],
      [`Refund paid back by hand (${zone()})`,
        order.refund_settled_by_hand_at ? when(order.refund_settled_by_hand_at) : '—'],
    ];
    const paid = order.status === 'paid';
    const owed = order.status === 'refunding' || order.status === 'refund_required';
    const paidBackButton = confirmButton('refund-settled-by-hand', 'Paid back by hand', byHand);
    const kept = confirmButton('refund-kept', 'Refund', refund(false));
    const restocked = confirmButton('refund-restocked', 'Refund and put back on sale', refund(true));
    replace(body, h('section', { class: 'card' },
      h('div', { class: 'heading' }, h('h2', {}, `Order ${order.id}`),
        h('span', { id: 'order-status' }, statusBadge(order.status))),
      h('dl', { class: 'facts' }, facts.map(([name, value]) =>
        h('div', {}, h('dt', {}, name), h('dd', {}, value)))),
      paid && h('div', { class: 'row' }, kept, restocked),
      paid && h('p', { class: 'muted' }, 'A refund goes back to where the shopper paid from '
        + '(with WeChat Pay: refunding until WeChat Pay confirms it). Put back on sale only '
        + 'while the sale is live; otherwise the units stay off sale, still the shopper\'s.'),
      owed && h('div', { class: 'row' }, paidBackButton),
      owed && h('p', { class: 'muted' }, 'Once WeChat Pay could not pay this refund (a payment '
        + 'exception, or a dead letter of the sale) and you paid the shopper back another way, '
        + 'record it here: the order is refunded. Refused while WeChat Pay may still pay it.'),
      outcome));
  }
  replace(view, body);
  await readInto(body, path, signal, show);
}

/** Reads `path` and shows it (`show`), unless the merchant left the page
 *  meanwhile (`signal`); what the API refused goes in `body` instead. */
async function readInto(body, path, signal, show) {
  try {
    const read = await call('GET', path);
    if (!signal.aborted) show(read);
  } catch (err) {
    if (!signal.aborted && !signedOut(err)) {
      replace(body, h('section', { class: 'card' }, h('p', {}, err.message)));
    }
  }
}

function setUpFindOrder() {
  const form = document.getElementById('find-order');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const id = form.elements.order_id.value.trim();
    if (id) location.hash = `#/orders/${encodeURIComponent(id)}`;
  });
}

// ---- campaigns -----------------------------------------------------------

/** Where a campaign stands: its live round, else upcoming or ended. */
function campaignPhase(campaign) {
  const live = campaign.rounds.find((round) => round.status === 'live');
  if (live) return { status: 'live', label: `round ${live.number} live` };
  if (campaign.rounds.some((round) => round.status === 'upcoming')) {
    return { status: 'upcoming', label: 'upcoming' };
  }
  return { status: 'ended', label: 'ended' };
}

/** Remaining / stock, reserved, paid and buyers of a sale's (or a total's) stats. */
const countCells = (stats) => [
  h('td', { class: 'num' }, `${stats.remaining} / ${stats.stock_total}`),
  h('td', { class: 'num' }, stats.reserved),
  h('td', { class: 'num' }, stats.paid),
  h('td', { class: 'num' }, stats.buyers)];
const COUNT_TITLES = ['Remaining / stock', 'Reserved', 'Paid', 'Buyers'];

async function showCampaigns() {
  const note = h('p', { class: 'muted' });
  const listing = paged('/admin/v1/campaigns', 'campaigns', (campaign) => {
    const phase = campaignPhase(campaign);
    return h('tr', { 'data-campaign-id': campaign.id },
      h('td', {}, h('a', { href: `#/campaigns/${campaign.id}` }, campaign.title), h('br'),
        h('small', { class: 'muted' }, campaign.id)),
      h('td', {}, h('span', { class: 'status', 'data-status': phase.status }, phase.label)),
      h('td', {}, when(campaign.rounds[0].starts_at), h('br'),
        h('small', {}, `to ${when(campaign.rounds.at(-1).ends_at)}`)),
      h('td', { class: 'num' }, `${campaign.rounds.length} × ${campaign.rounds[0].items.length}`),
      ...countCells(campaign.totals));
  }, (err) => { note.textContent = err.message; });
  const table = h('table', { id: 'campaigns-table' },
    h('thead', {}, h('tr', {},
      ['Campaign', 'Status', `Rounds (${zone()})`, 'Rounds × items', ...COUNT_TITLES]
        .map((title) => h('th', {}, title)))),
    listing.rows);
  const refresh = h('button', { type: 'button', class: 'quiet', onclick: () => load() }, 'Refresh');
  replace(view, h('section', { class: 'card' },
    h('div', { class: 'heading' }, h('h2', {}, 'Campaigns'), refresh,
      h('a', { class: 'button', href: '#/campaigns/new' }, 'Schedule a campaign')),
    h('p', { class: 'muted' }, 'Seckill campaigns: rounds × items, each a sale.'),
    table, listing.more, note));
  async function load() {
    try {
      const campaigns = await listing.reload();
      note.textContent = campaigns.length === 0 ? 'No campaigns yet.'
        : `Counts as of ${when(Date.now())}.`;
    } catch (err) {
      if (!signedOut(err)) note.textContent = err.message;
    }
  }
  await load();
}

async function showCampaign(id) {
  const { signal } = leaving;
  const path = `/admin/v1/campaigns/${encodeURIComponent(id)}`;
  const outcome = h('p', { class: 'field-error', 'data-error-for': 'form' });
  const body = h('div');
  const refresh = h('button', { type: 'button', class: 'quiet', onclick: () => load() }, 'Refresh');
  /** Runs a change, then shows the campaign it answers (or why not). */
  const changing = (change) => async () => {
    outcome.textContent = '';
    try {
      show(await change());
    } catch (err) {
      if (!signedOut(err)) outcome.textContent = err.message;
    }
  };
  /** A form whose submit sends `change(fields)` as a PATCH of the
   *  campaign at the version shown, then shows the campaign answered. */
  const patchForm = (id, fields, label, change, version) => {
    const form = h('form', { id, class: 'inline', novalidate: true },
      fields, formError(), h('button', { type: 'submit' }, label));
    // Field ids unique on the page, which holds several such forms.
    for (const input of form.querySelectorAll('[id^="field-"]')) {
      const labelled = form.querySelector(`label[for="${input.id}"]`);
      input.id = `${id}-${input.id}`;
      if (labelled) labelled.htmlFor = input.id;
    }
    onSubmit(form, async (elements) => show(await call('PATCH', path,
      { version, ...change(elements) })));
    return form;
  };
  const windowFields = (starts, ends) => h('div', { class: 'row' },
    field(`Starts (${zone()})`, 'starts_at',
      h('input', { type: 'datetime-local', value: starts && utcToWall(starts, zone()) })),
    field(`Ends (${zone()})`, 'ends_at',
      h('input', { type: 'datetime-local', value: ends && utcToWall(ends, zone()) })));
  const windowOf = (elements) => ({
    starts_at: wallToUtc(elements.starts_at.value, zone()),
    ends_at: wallToUtc(elements.ends_at.value, zone()),
  });
  function round(campaign, r) {
    const endRound = confirmButton(`end-round-${r.number}`, 'End this round now',
      changing(() => call('PATCH', path,
        { version: campaign.version, rounds: [{ number: r.number, status: 'ended' }] })));
    endRound.hidden = r.status !== 'live';
    // Before the campaign starts, a round may go (its sales cancelled).
    const remove = campaign.rounds[0].status === 'upcoming'
      && confirmButton(`remove-round-${r.number}`, 'Remove this round',
        changing(() => call('PATCH', path,
          { version: campaign.version, remove_rounds: [r.number] })));
    // A round not started may move (the store's clock decides).
    const move = r.status === 'upcoming' && patchForm(`move-round-${r.number}`,
      windowFields(r.starts_at, r.ends_at), 'Move the round',
      (elements) => ({ rounds: [{ number: r.number, ...windowOf(elements) }] }), campaign.version);
    return h('section', { class: 'card', 'data-round': r.number },
      h('div', { class: 'heading' },
        h('h3', {}, `Round ${r.number}`),
        h('span', { class: 'muted' }, `${when(r.starts_at)} → ${when(r.ends_at)} (${zone()})`),
        h('span', { class: 'status', 'data-status': r.status }, r.status),
        endRound, remove),
      move,
      h('table', {},
        h('thead', {}, h('tr', {}, ['Item', 'Seckill / list price', 'Status', ...COUNT_TITLES]
          .map((title) => h('th', {}, title)))),
        h('tbody', {},
          r.items.map((item) => h('tr', { 'data-sale-id': item.sale_id },
            h('td', {}, h('a', { href: `#/sales/${item.sale_id}` }, item.title), h('br'),
              h('small', { class: 'muted' }, `${item.sku} · ${item.sale_id}`)),
            h('td', { class: 'num' }, `${money(item.price_cents, campaign.currency)} / `
              + money(item.original_price_cents, campaign.currency)),
            h('td', {}, statusBadge(item.status)),
            ...countCells(item.stats))),
          h('tr', { class: 'totals', 'data-round-totals': r.number },
            h('td', {}, 'Round total'), h('td'), h('td'), ...countCells(r.totals)))));
  }
  /** Before the first round starts (the API refuses it after): the
   *  campaign's terms, and each item's title, prices and limit, each form
   *  a PATCH of what it shows; an item removed from every round, its
   *  sales cancelled (a second press confirms). */
  function terms(campaign) {
    const number = (value) => h('input', { type: 'number', min: 1, step: 1, value });
    // An emptied box sends nothing: that term stays as it is.
    const given = (input) => (input.value === '' ? undefined : Number(input.value));
    const campaignTerms = patchForm('campaign-terms', h('div', { class: 'row' },
      field('Title', 'title', h('input', { type: 'text', value: campaign.title })),
      field('Currency', 'currency',
        h('input', { type: 'text', maxlength: 3, value: campaign.currency })),
      field('Limit per shopper per round', 'per_user_limit_per_round',
        number(campaign.per_user_limit_per_round)),
      field('Limit per shopper in all', 'per_user_limit_total',
        number(campaign.per_user_limit_total ?? ''), 'empty: none'),
      field('Payment timeout (s)', 'payment_timeout_secs', number(campaign.payment_timeout_secs)),
      field('Remind the webhook (s before each round)', 'remind_before_secs',
        number(campaign.remind_before_secs ?? ''), 'empty: no reminder'),
      purchaseTokenBox(campaign.require_purchase_token)),
    'Change the campaign', (elements) => ({
      title: elements.title.value,
      currency: elements.currency.value,
      per_user_limit_per_round: given(elements.per_user_limit_per_round),
      per_user_limit_total: given(elements.per_user_limit_total) ?? null,
      payment_timeout_secs: given(elements.payment_timeout_secs),
      remind_before_secs: given(elements.remind_before_secs) ?? null,
      require_purchase_token: elements.require_purchase_token.checked,
    }), campaign.version);
    const itemTerms = campaign.rounds[0].items.map((item) => patchForm(`item-terms-${item.number}`,
      h('div', { class: 'row' },
        field(`Item ${item.number} (${item.sku}): title`, 'title',
          h('input', { type: 'text', value: item.title })),
        field('Seckill price (cents)', 'price_cents', number(item.price_cents)),
        field('List price (cents)', 'original_price_cents', number(item.original_price_cents)),
        field('Limit per shopper', 'per_user_limit', number(item.per_user_limit)),
        confirmButton(`remove-item-${item.number}`, 'Remove this item',
          changing(() => call('PATCH', path,
            { version: campaign.version, remove_items: [item.number] })))),
      'Change the item', (elements) => ({
        items: [{
          number: item.number,
          title: elements.title.value,
          price_cents: given(elements.price_cents),
          original_price_cents: given(elements.original_price_cents),
          per_user_limit: given(elements.per_user_limit),
        }],
      }), campaign.version));
    return h('section', { class: 'card', id: 'campaign-terms-card' },
      h('h3', {}, 'Before the start'), campaignTerms, ...itemTerms);
  }
  /** The campaign's changes beyond a round: each item's stock in every
   *  round not yet ended, and, before the first round starts (the API
   *  refuses it after), a round added after the last. */
  function changes(campaign) {
    const open = campaign.rounds.filter((r) => r.status !== 'ended');
    if (open.length === 0) return null;
    const last = campaign.rounds.at(-1);
    const hour = 60 * 60_000;
    const after = Date.parse(last.ends_at) + hour;
    const upcoming = campaign.rounds[0].status === 'upcoming';
    return h('section', { class: 'card', id: 'campaign-changes' },
      h('h3', {}, 'Change the campaign'),
      h('div', { class: 'row' }, open[0].items.map((item) => patchForm(`item-stock-${item.number}`,
        field(`${item.title} (${item.sku}): stock per round`, 'stock_per_round',
          h('input', { type: 'number', min: 1, step: 1, value: item.stats.stock_total }),
          'in every round not yet ended; never below what is held or paid'),
        'Set stock', (elements) => ({
          items: [{ number: item.number, stock_per_round: Number(elements.stock_per_round.value) }],
        }), campaign.version))),
      upcoming && patchForm('add-round', windowFields(after, after + hour), 'Add a round',
        (elements) => ({ add_rounds: [windowOf(elements)] }), campaign.version));
  }
  function show(campaign) {
    const phase = campaignPhase(campaign);
    const cancel = confirmButton('cancel-campaign', 'Cancel the campaign',
      changing(() => call('DELETE', path)));
    cancel.hidden = campaign.rounds[0].status !== 'upcoming';
    const limits = `limit ${campaign.per_user_limit_per_round} per shopper per round`
      + (campaign.per_user_limit_total === null ? ''
        : `, ${campaign.per_user_limit_total} in all`);
    replace(body,
      h('section', { class: 'card' },
        h('div', { class: 'heading' }, h('h2', { id: 'campaign-title' }, campaign.title), refresh,
          h('span', { id: 'campaign-status', class: 'status', 'data-status': phase.status },
            phase.label)),
        h('p', { class: 'muted' }, `${campaign.id} · version ${campaign.version} · ${limits} · `
          + `pay within ${campaign.payment_timeout_secs} s`),
        h('table', {}, h('thead', {}, h('tr', {}, COUNT_TITLES.map((t) => h('th', {}, t)))),
          h('tbody', {}, h('tr', { id: 'campaign-totals' }, ...countCells(campaign.totals)))),
        h('div', { class: 'row' }, cancel),
        outcome),
      changes(campaign),
      campaign.rounds[0].status === 'upcoming' && terms(campaign),
      campaign.rounds.map((r) => round(campaign, r)));
  }
  replace(view, body);
  const load = () => readInto(body, path, signal, show);
  await load();
}

// ---- schedule a campaign -------------------------------------------------

const ROUND_FIELDS = ['starts_at', 'ends_at'];
const ITEM_FIELDS = ['sku', 'title', 'price_cents', 'original_price_cents', 'stock_per_round',
  'per_user_limit'];

/** A table of rows the merchant adds and removes (rounds, items): `cells()`
 *  makes a new row's inputs by key, `after(last)` a new row's values from
 *  the last row's (`undefined` for the first). Errors of `names` show
 *  under the table. */
function rowsTable(id, titles, names, cells, after = () => ({})) {
  const rows = h('tbody');
  const add = (values = {}) => {
    const inputs = cells();
    for (const [key, value] of Object.entries(values)) inputs[key].value = value;
    const remove = h('button', { type: 'button', class: 'quiet' }, 'Remove');
    const row = h('tr', {}, Object.values(inputs).map((input) => h('td', {}, input)),
      h('td', {}, remove));
    row.inputs = inputs;
    remove.addEventListener('click', () => row.remove());
    rows.append(row);
  };
  const addNext = () => add(after(values().at(-1)));
  const more = h('button', { type: 'button', class: 'quiet', id: `add-${id}` },
    `Add ${id === 'rounds' ? 'a round' : 'an item'}`);
  more.addEventListener('click', addNext);
  /** Every row's values by key, in order. */
  const values = () => [...rows.rows].map((row) => Object.fromEntries(
    Object.entries(row.inputs).map(([key, input]) => [key, input.value.trim()])));
  const section = h('div', { class: 'field', id: `${id}-table` },
    h('table', {}, h('thead', {}, h('tr', {}, titles.map((t) => h('th', {}, t)), h('th'))), rows),
    more,
    h('p', { class: 'field-error', 'data-error-for': [id, ...names].join(' ') }));
  return { section, addNext, values };
}

function showNewCampaign() {
  const input = (type, attrs = {}) => h('input', { type, ...attrs });
  const hour = 60 * 60_000;
  const wall = (ms) => utcToWall(ms, zone());
  const rounds = rowsTable('rounds', [`Starts (${zone()})`, `Ends (${zone()})`], ROUND_FIELDS,
    () => ({ starts_at: input('datetime-local'), ends_at: input('datetime-local') }),
    // A new round: an hour, an hour after the last one ends.
    (last) => {
      const from = last ? Date.parse(wallToUtc(last.ends_at, zone())) + hour : Date.now() + hour;
      return Number.isNaN(from) ? {} : { starts_at: wall(from), ends_at: wall(from + hour) };
    });
  const items = rowsTable('items', ['SKU', 'Title', 'Seckill price (cents)',
    'List price (cents)', 'Stock per round', 'Limit per shopper'], ITEM_FIELDS,
  () => ({
    sku: input('text', { 'aria-label': 'SKU' }),
    title: input('text', { 'aria-label': 'Title' }),
    price_cents: input('number', { min: 0, step: 1, 'aria-label': 'Seckill price (cents)' }),
    original_price_cents: input('number', { min: 0, step: 1, 'aria-label': 'List price (cents)' }),
    stock_per_round: input('number', { min: 1, step: 1, 'aria-label': 'Stock per round' }),
    per_user_limit: input('number', { min: 1, step: 1, value: 1, 'aria-label': 'Limit per shopper' }),
  }));
  rounds.addNext();
  items.addNext();
  const form = h('form', { id: 'new-campaign-form', novalidate: true },
    h('div', { class: 'grid' },
      field('Title', 'title', input('text', { required: true })),
      field('Currency', 'currency', input('text', { value: 'CNY', maxlength: 3 })),
      field('Limit per shopper per round', 'per_user_limit_per_round',
        input('number', { value: 1, min: 1, step: 1 })),
      field('Limit per shopper in all', 'per_user_limit_total',
        input('number', { min: 1, step: 1 }), 'empty: none'),
      field('Payment timeout (s)', 'payment_timeout_secs',
        input('number', { value: 900, min: 1, step: 1 })),
      field('Remind the webhook (s before each round)', 'remind_before_secs',
        input('number', { min: 1, step: 1 }), 'empty: no reminder'),
      purchaseTokenBox(false)),
    h('h3', {}, 'Rounds'), rounds.section,
    h('h3', {}, 'Items (each round sells every item)'), items.section,
    formError(),
    h('button', { type: 'submit' }, 'Schedule the campaign'));
  onSubmit(form, async (fields) => {
    const number = (raw) => (raw === '' ? undefined : Number(raw));
    const body = {
      title: fields.title.value,
      currency: fields.currency.value,
      require_purchase_token: fields.require_purchase_token.checked,
      ...typedNumbers(fields, ['per_user_limit_per_round', 'per_user_limit_total',
        'payment_timeout_secs', 'remind_before_secs']),
      rounds: rounds.values().map((round) => ({
        starts_at: wallToUtc(round.starts_at, zone()),
        ends_at: wallToUtc(round.ends_at, zone()),
      })),
      items: items.values().map((item) => ({
        sku: item.sku,
        title: item.title,
        price_cents: number(item.price_cents),
        original_price_cents: number(item.original_price_cents),
        stock_per_round: number(item.stock_per_round),
        per_user_limit: number(item.per_user_limit),
      })),
    };
    const campaign = await call('POST', '/admin/v1/campaigns', body);
    location.hash = `#/campaigns/${campaign.id}`;
  });
  replace(view, h('section', { class: 'card' }, h('h2', {}, 'Schedule a campaign'),
    h('p', { class: 'muted' }, 'Every round sells every item, each round × item a sale of its '
      + 'own; the limits per round and in all hold across the items.'),
    form));
}

// ---- payment exceptions --------------------------------------------------

async function showPaymentExceptions() {
  const body = h('div');
  const failed = (err) => replace(body, h('p', { class: 'bad' }, err.message));
  /** A row, and its button that takes the exception off the list once the
   *  merchant settled it (a second press confirms). */
  const row = (e) => {
    const outcome = h('span', { class: 'field-error' });
    const tr = h('tr', { 'data-transaction': e.transaction_id },
      h('td', {}, e.kind), h('td', {}, e.transaction_id), h('td', {}, e.out_trade_no),
      h('td', { class: 'num' }, money(e.amount_cents, e.currency)),
      h('td', {}, when(e.recorded_at)),
      h('td', {}, confirmButton(null, 'Settled', async () => {
        outcome.textContent = '';
        try {
          await call('DELETE',
            `/admin/v1/payment-exceptions/${encodeURIComponent(e.transaction_id)}`);
          tr.remove();
          if (listing.rows.childElementCount === 0 && listing.more.hidden) replace(body, none());
        } catch (err) {
          if (!signedOut(err)) outcome.textContent = err.message;
        }
      }), outcome));
    return tr;
  };
  const none = () => h('p', { class: 'muted' }, 'None.');
  const listing = paged('/admin/v1/payment-exceptions', 'exceptions', row, failed);
  replace(view, h('section', { class: 'card' }, h('h2', {}, 'Payment exceptions'),
    h('p', { class: 'muted' }, 'Verified payments the engine could not apply (an amount that '
      + 'differs from the order\'s, or no such order) and refunds WeChat Pay could not pay '
      + 'back (abnormal) or closed unpaid: settle them with the shopper, then mark them '
      + 'settled to take them off this list (a refund\'s order is then refunded, paid back by '
      + 'hand). A refund WeChat Pay paid after you paid it back by hand (paid twice) is '
      + 'yours to recover from the shopper.'),
    body));
  try {
    const exceptions = await listing.reload();
    replace(body, exceptions.length === 0 ? none()
      : [h('table', { id: 'payment-exceptions' },
        h('thead', {}, h('tr', {}, ['Kind', 'Transaction', 'Order (out_trade_no)', 'Amount',
          `Recorded (${zone()})`, ''].map((t) => h('th', {}, t)))),
        listing.rows), listing.more]);
  } catch (err) {
    if (!signedOut(err)) failed(err);
  }
}

// ---- routing -------------------------------------------------------------

function route() {
  leaving.abort();
  leaving = new AbortController();
  if (!savedToken()) {
    showSignIn();
    return;
  }
  signIn.hidden = true;
  topbar.hidden = false;
  const hash = location.hash.replace(/^#/, '');
  for (const link of topbar.querySelectorAll('nav a')) {
    link.classList.toggle('current', hash.startsWith(link.getAttribute('href').slice(1)));
  }
  const sale = /^\/sales\/([^/]+)$/.exec(hash);
  const campaign = hash === '/campaigns/new' ? null : /^\/campaigns\/([^/]+)$/.exec(hash);
  const order = /^\/orders\/([^/]+)$/.exec(hash);
  if (sale) showSale(decodeURIComponent(sale[1]));
  else if (order) showOrder(decodeURIComponent(order[1]));
  else if (campaign) showCampaign(decodeURIComponent(campaign[1]));
  else if (hash === '/campaigns') showCampaigns();
  else if (hash === '/campaigns/new') showNewCampaign();
  else if (hash === '/new') showNewSale();
  else if (hash === '/payment-exceptions') showPaymentExceptions();
  else showSales();
}

function setUpZones() {
  for (const name of ZONES) zoneSelect.append(h('option', { value: name }, name));
  zoneSelect.value = localStorage.getItem(ZONE_KEY) ?? DEFAULT_ZONE;
  zoneSelect.addEventListener('change', () => {
    localStorage.setItem(ZONE_KEY, zoneSelect.value);
    route();
  });
}

setUpZones();
setUpSignIn();
setUpFindOrder();
document.getElementById('sign-out').addEventListener('click', () => showSignIn());
window.addEventListener('hashchange', route);
route();
