// The demo shop: plain JavaScript against the public APIs, the way a
// storefront would call them (docs/integration.md). Everything the page shows
// comes from the servers; nothing is computed or faked here.
//
// - recommendations and popular items: this origin (recsys-serving);
// - events: POST {ingest_url}/v1/events (cross-origin: ingest must allow this
//   origin in [ingest] cors_origins), each carrying the rec_id of the list its
//   item was shown in, so tracking attributes it to that impression;
// - A/B numbers: GET /v1/stats, polled every second.
//
// Text from the servers is only ever set with textContent (no markup).
"use strict";

const STORAGE_KEY = "recsys-demo-shopper";
const GRID_SIZE = 12;
const STATS_EVERY_MS = 1000;
// After an event, the row is re-read until it changes: the updater folds the
// event in within a fraction of a second; past this the row is left as it is.
const ROW_RETRY_MS = [250, 400, 600, 800, 1000, 1500, 2000];

const state = { cfg: null, user: null, recs: null, grid: null, categories: new Map(), rowRefresh: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
}

function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = !msg;
}

async function getJson(url, options) {
    const resp = await fetch(url, options);
    let body = null;
    try {
        body = await resp.json();
    } catch (_) {
        // A non-JSON answer is reported by its status below.
    }
    if (!resp.ok) {
        const why = body && (body.detail || body.error) ? `${body.error}: ${body.detail || ""}` : resp.statusText;
        const err = new Error(`${url} answered ${resp.status} (${why})`);
        err.status = resp.status;
        err.body = body;
        throw err;
    }
    return body;
}

function newShopperId() {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return "demo-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A stable colour per category, so items of one category look alike.
function hue(category) {
    if (category === null || category === undefined) return null;
    return (Number(category) * 137) % 360;
}

// A made-up but stable price for the "Buy" button (the demo has no prices).
function price(itemId) {
    let h = 0;
    for (const c of itemId) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return 5 + (h % 9500) / 100;
}

async function loadCategories(items) {
    const missing = items.map((i) => i.item_id).filter((id) => !state.categories.has(id));
    if (missing.length === 0) return;
    const known = await getJson(`/demo/catalog?items=${encodeURIComponent(missing.join(","))}`);
    for (const k of known) state.categories.set(k.item_id, k);
}

function card(item, list) {
    const info = state.categories.get(item.item_id);
    const c = el("div", "card");
    c.dataset.item = item.item_id;
    c.dataset.recId = list.rec_id;
    c.tabIndex = 0;
    const thumb = el("div", "thumb");
    const h = hue(info && info.category);
    thumb.style.background = h === null ? "#e4e7ec" : `hsl(${h} 55% 78%)`;
    c.append(thumb, el("span", "name", `Item ${item.item_id}`));
    c.append(el("span", "cat", info && info.category !== null ? `Category ${info.category}` : "Category unknown"));
    const actions = el("div", "actions");
    const cart = el("button", "cart", "Add to cart");
    const buy = el("button", "buy", "Buy");
    cart.type = buy.type = "button";
    actions.append(cart, buy);
    c.append(actions);
    // A click on the card is a product view; the buttons are the conversions.
    c.addEventListener("click", (ev) => {
        const kind = ev.target === cart ? "addtocart" : ev.target === buy ? "transaction" : "view";
        c.classList.add("viewed");
        send(kind, item.item_id, list.rec_id);
    });
    c.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") send("view", item.item_id, list.rec_id);
    });
    return c;
}

function signature(r) {
    return r ? `${r.source}|${r.model_version}|${r.items.map((i) => i.item_id).join(",")}` : "";
}

async function loadRecs() {
    const k = state.cfg.default_k;
    const r = await getJson(`/v1/recommendations/${encodeURIComponent(state.user)}?k=${k}`);
    await loadCategories(r.items);
    state.recs = r;
    const src = $("rec-source");
    src.textContent = r.source;
    src.className = `badge ${r.source}`;
    $("rec-variant").textContent = r.variant;
    $("rec-model").textContent = r.model_version;
    $("rec-degraded").hidden = !r.degraded;
    $("user-variant").textContent = `A/B arm: ${r.variant}`;
    $("rec-note").textContent =
        r.variant === "popular"
            ? "This shopper is in the control arm: it is shown popular items whatever it does (that is what the A/B test compares against). Start a new shopper to land in the als arm."
            : r.source === "personal"
              ? "Personal: scored from this shopper's events by the model."
              : "Not personal yet: click a few items and watch this row change.";
    $("rec-row").replaceChildren(...r.items.map((i) => card(i, r)));
    return r;
}

async function loadGrid() {
    const r = await getJson(`/v1/popular?k=${GRID_SIZE}&user_id=${encodeURIComponent(state.user)}`);
    await loadCategories(r.items);
    state.grid = r;
    $("grid-model").textContent = r.model_version;
    $("grid").replaceChildren(...r.items.map((i) => card(i, r)));
}

// Re-reads the row after an event until it changes (or the retries run out);
// a newer event restarts the sequence.
async function refreshRow() {
    const mine = ++state.rowRefresh;
    const before = signature(state.recs);
    for (const wait of ROW_RETRY_MS) {
        await new Promise((ok) => setTimeout(ok, wait));
        if (mine !== state.rowRefresh) return;
        const r = await loadRecs();
        if (signature(r) !== before) return;
    }
}

function logEvent(kind, item, text, rejected) {
    const li = el("li", rejected ? "rejected" : "", `${kind} ${item}: ${text}`);
    $("event-log").prepend(li);
}

async function send(kind, item, recId) {
    const ev = { user_id: state.user, item_id: item, event: kind, rec_id: recId };
    if (kind === "transaction") {
        ev.transaction_id = `demo-${Date.now()}`;
        ev.revenue = price(item);
    }
    try {
        const resp = await fetch(`${state.cfg.ingest_url}/v1/events`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify(ev),
            keepalive: true,
        });
        const body = await resp.json().catch(() => null);
        if (resp.ok && body && body.accepted === 1) {
            logEvent(kind, item, "accepted", false);
        } else {
            const why = body && body.rejected && body.rejected[0] ? `${body.rejected[0].code}: ${body.rejected[0].reason}` : body && body.detail;
            logEvent(kind, item, `HTTP ${resp.status} ${why || ""}`, true);
            return;
        }
    } catch (e) {
        logEvent(kind, item, `not sent (${e.message}); is ${state.cfg.ingest_url} up and does it allow this origin?`, true);
        return;
    }
    // As on a real shop, acting on an item leads to a new page: new lists,
    // new impressions (tracking counts at most one click per impression).
    loadGrid().catch((e) => showError(e.message));
    refreshRow().catch((e) => showError(e.message));
}

function pct(x) {
    return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`;
}

// A rate with its interval on a second line.
function withCi(rate, ci) {
    const td = el("td", "", pct(rate));
    if (ci) td.append(el("small", "", `${pct(ci.low)} – ${pct(ci.high)}`));
    return td;
}

async function loadStats() {
    const s = await getJson("/v1/stats");
    const rows = s.arms.map((a) => {
        const tr = el("tr");
        tr.dataset.variant = a.variant;
        tr.dataset.model = a.model_version;
        if (state.recs && a.variant === state.recs.variant && a.model_version === state.recs.model_version) tr.className = "mine";
        const cells = [
            a.variant,
            a.model_version,
            a.impressions,
            a.clicks,
            withCi(a.ctr, a.ctr_ci95),
            a.carts,
            a.purchases,
            withCi(a.conversion_rate, a.conversion_rate_ci95),
        ];
        for (const [i, v] of cells.entries()) {
            const td = v instanceof Node ? v : el("td", "", String(v));
            td.dataset.field = ["variant", "model_version", "impressions", "clicks", "ctr", "carts", "purchases", "conversion_rate"][i];
            tr.append(td);
        }
        return tr;
    });
    $("stats").tBodies[0].replaceChildren(...rows);
    const pooled = s.comparisons.filter((c) => c.model_version === null);
    $("comparisons").replaceChildren(
        ...pooled.map((c) => {
            const lift = c.relative_lift === null ? "–" : `${c.relative_lift >= 0 ? "+" : ""}${(100 * c.relative_lift).toFixed(1)} %`;
            const p = c.p_value === null ? "–" : c.p_value.toPrecision(2);
            return el("p", "", `${c.metric}: als ${pct(c.treatment_rate)} vs popular ${pct(c.control_rate)}, lift ${lift}, p = ${p}`);
        }),
    );
    $("stats-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function switchTo(user) {
    state.user = user;
    state.recs = null;
    localStorage.setItem(STORAGE_KEY, user);
    $("user-id").textContent = user;
    $("event-log").replaceChildren();
    showError("");
    try {
        await Promise.all([loadRecs(), loadGrid()]);
    } catch (e) {
        showError(e.message);
    }
}

async function main() {
    try {
        state.cfg = await getJson("/demo/config.json");
    } catch (e) {
        showError(e.message);
        return;
    }
    $("new-shopper").addEventListener("click", () => switchTo(newShopperId()));
    $("switch-shopper").addEventListener("submit", (ev) => {
        ev.preventDefault();
        const v = $("shopper-input").value.trim();
        if (v) switchTo(v);
    });
    await switchTo(localStorage.getItem(STORAGE_KEY) || newShopperId());
    const poll = () =>
        loadStats()
            .catch((e) => ($("stats-updated").textContent = e.message))
            .finally(() => setTimeout(poll, STATS_EVERY_MS));
    poll();
}

main();
