// gpumesh explorer page: hash routes over the JSON API (/api/...), live through server-sent events
// (/api/stream), polling /api/overview when the stream is unavailable. Every text from the chain or
// IPFS goes into the page as text nodes (never innerHTML): spec metadata is untrusted.
"use strict";

const main = document.getElementById("main");
let now = 0; // the chain head's timestamp: every relative time is measured from it
let rendering = false;
let lastRender = 0;
let seenEvents = null;
const REDRAW_MS = 10000;
let pending = false;

// ------------------------------------------------------------------ DOM and formatting helpers
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

function span(s) {
  s = Math.abs(Math.trunc(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h` + (s % 3600 >= 60 ? String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m" : "");
  return `${Math.floor(s / 86400)}d` + (s % 86400 >= 3600 ? `${Math.floor((s % 86400) / 3600)}h` : "");
}

function clock(s) { // a chess clock to the second: 3d 11:59:59
  const d = Math.floor(s / 86400), r = s % 86400;
  const t = [Math.floor(r / 3600), Math.floor((r % 3600) / 60), r % 60].map((x) => String(x).padStart(2, "0")).join(":");
  return d ? `${d}d ${t}` : t;
}

function utc(ts) {
  return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function when(ts) {
  if (!ts) return "–";
  const d = ts - now;
  return `${utc(ts)} (${d > 0 ? "in " + span(d) : d === 0 ? "now" : span(d) + " ago"})`;
}

function short(hex, n = 6) {
  if (!hex) return "–";
  return hex.length > 2 * n + 4 ? `${hex.slice(0, n + 2)}…${hex.slice(-n + 2)}` : hex;
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }
function eth(a) { return a ? `${a.eth} ETH` : "–"; }
function addr(a, kind) {
  if (!a) return "–";
  return kind ? h("a", { href: `#/${kind}/${a}`, title: a, class: "mono" }, short(a)) : h("span", { class: "mono", title: a }, short(a));
}
function badge(text, kind) { return h("span", { class: `badge ${kind || String(text).toLowerCase().replace(/ /g, "-")}` }, text); }

function table(cols, rows, cls) {
  return h("table", { class: cls || "" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: cols.length, class: "muted" }, "nothing yet"))));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || `${r.status}`);
  if (data.now) now = data.now;
  return data;
}

// ------------------------------------------------------------------ views
const LIVE_STATES = ["Open", "Claimed", "Submitted"]; // the states whose Job.deadline is still ahead
async function viewJobs() {
  const d = await api("/api/jobs");
  return [h("h1", {}, "Jobs ", h("small", {}, `${d.total} on this chain`)),
    table(["job", "state", "poster", "reward", "units", "deadline", "worker", "result root", "games"],
      d.jobs.map((j) => [h("a", { href: `#/job/${j.id}` }, `#${j.id}`), badge(j.state), addr(j.poster),
        eth(j.reward), j.units, LIVE_STATES.includes(j.state) ? when(j.deadline) : "–", addr(j.worker, "worker"), h("span", { class: "mono" }, short(j.result_root)),
        j.games.length ? j.games.map((g) => h("a", { href: `#/game/${g}`, class: "gamelink" }, `game ${g}`)) : "–"]), "jobs")];
}

async function viewJob(id) {
  const j = await api(`/api/jobs/${id}`);
  const s = j.spec || {};
  const meta = Object.entries(s.meta || {}).map(([k, v]) => `${k}: ${v}`).join(" · ");
  const out = [h("h1", {}, `Job #${j.id} `, badge(j.state)),
    facts([
      ["poster", addr(j.poster)], ["reward", eth(j.reward)], ["units", String(j.units)],
      ["worker", j.worker ? addr(j.worker, "worker") : "not claimed"],
      ["required stake", eth(j.required_stake)], ["dispute bond", eth(j.dispute_bond)],
      j.deadlines.claim && ["claim deadline", when(j.deadlines.claim)],
      j.deadlines.execution && ["execution deadline", when(j.deadlines.execution)],
      j.deadlines.challenge && ["challenge deadline", when(j.deadlines.challenge)],
      ["posted", j.posted_time ? when(j.posted_time) : "–"],
      ["result root", h("span", { class: "mono" }, j.result_root || "no result yet")],
      ["outputs", j.outputs_cid ? h("a", { href: j.outputs_url, class: "mono" }, j.outputs_cid) : "–"],
      ["spec", h("span", { class: "mono" }, j.spec_cid)],
      s.error ? ["spec document", h("span", { class: "warn" }, s.error)] : ["program", h("span", { class: "mono" }, s.program_cid)],
      !s.error && ["inputs", h("a", { href: s.inputs_url, class: "mono" }, s.inputs_cid)],
      meta && ["meta", meta],
    ])];
  if (j.state === "Slashed") out.push(h("p", { class: "alert" }, "The worker was proven wrong: its outputs are not the program's result."));
  out.push(h("h2", {}, "Dispute games"), gamesTable(j.game_rows));
  out.push(h("h2", {}, "Timeline"), table(["block", "time", "event", "details"],
    j.timeline.map((e) => [String(e.block), when(e.time), e.event,
      h("span", { class: "args" }, Object.entries(e.args).filter(([k]) => k !== "jobId").map(([k, v]) => `${k}=${arg(k, v)}`).join("  "))])));
  return out;
}

const AMOUNTS = /^(reward|stake|paid|refund|amount|bond|burned|slashed|lockedStake|totalStake|unbonding)$/;
const TIMES = /(Deadline|readyAt)$/;

function weiText(w) {
  const s = String(w).padStart(19, "0");
  const frac = s.slice(-18).replace(/0+$/, "");
  return `${s.slice(0, -18)}${frac ? "." + frac : ""} ETH`;
}

function arg(k, v) {
  if (AMOUNTS.test(k) && /^\d+$/.test(String(v))) return weiText(v);
  if (TIMES.test(k) && Number(v) > 0) return utc(Number(v));
  return typeof v === "string" && v.startsWith("0x") ? short(v, 8) : v;
}

function gamesTable(rows) {
  return table(["game", "job", "kind", "challenger", "worker", "bond", "outcome", "reason", "opened"],
    rows.map((g) => [h("a", { href: `#/game/${g.id}` }, `game ${g.id}`), h("a", { href: `#/job/${g.job}` }, `#${g.job}`), g.kind,
      addr(g.challenger, "watchtower"), addr(g.worker, "worker"), eth(g.bond), badge(g.outcome), g.reason || "–", when(g.opened_time)]));
}

async function viewWorkers() {
  const d = await api("/api/workers");
  return [h("h1", {}, "Workers"), table(["worker", "stake", "free stake", "jobs done", "earnings", "slashes", "slashed"],
    d.workers.map((w) => [addr(w.address, "worker"), eth(w.stake), eth(w.free_stake), String(w.jobs_done), eth(w.earnings),
      w.slashes ? badge(String(w.slashes), "slashed") : "0", eth(w.slashed)]))];
}

async function viewWorker(a) {
  const w = await api(`/api/workers/${a}`);
  const jobs = (ids) => ids.length ? ids.map((i) => h("a", { href: `#/job/${i}`, class: "gamelink" }, `#${i}`)) : "–";
  return [h("h1", {}, "Worker ", h("span", { class: "mono" }, w.address)),
    facts([["stake", eth(w.stake)], ["free stake", eth(w.free_stake)], ["locked", eth(w.locked)], ["unbonding", eth(w.unbonding)],
      ["jobs done", String(w.jobs_done)], ["earnings", `${eth(w.earnings)} (rewards ${eth(w.rewards)}, games ${eth(w.game_income)})`],
      ["slashes", String(w.slashes)], ["slashed", eth(w.slashed)], ["claimed", jobs(w.jobs_claimed)]]),
    h("h2", {}, "Slashes"), table(["job", "game", "stake"],
      w.slash_list.map((s) => [h("a", { href: `#/job/${s.job}` }, `#${s.job}`), h("a", { href: `#/game/${s.game}` }, `game ${s.game}`),
        eth(s.stake)]))];
}

async function viewTowers() {
  const d = await api("/api/watchtowers");
  return [h("h1", {}, "Watchtowers ", h("small", {}, "challengers seen in games")),
    table(["watchtower", "games", "won", "lost", "open", "bonds posted", "slash shares", "bonds lost"],
      d.watchtowers.map((t) => [addr(t.address, "watchtower"), String(t.games.length), String(t.won), String(t.lost), String(t.open),
        eth(t.bonds), eth(t.slash_paid), eth(t.bonds_lost)]))];
}

async function viewTower(a) {
  const t = await api(`/api/watchtowers/${a}`);
  const g = await api("/api/games");
  return [h("h1", {}, "Watchtower ", h("span", { class: "mono" }, t.address)),
    facts([["games", String(t.games.length)], ["won", String(t.won)], ["lost", String(t.lost)], ["data requests", String(t.data_requests.length)],
      ["bonds posted", eth(t.bonds)], ["slash shares received", eth(t.slash_paid)], ["bonds lost", eth(t.bonds_lost)]]),
    h("h2", {}, "Games"), gamesTable(g.games.filter((x) => x.challenger.toLowerCase() === t.address.toLowerCase()))];
}

async function viewGames() {
  const d = await api("/api/games");
  return [h("h1", {}, "Dispute games"), gamesTable(d.games)];
}

function bar(count, lo, hi, final) {
  const w = (x) => `${count ? (100 * x) / count : 0}%`;
  const sel = h("div", { class: "sel" });
  sel.style.left = w(lo); // through the CSSOM: the page's CSP allows no inline style attributes
  sel.style.width = `max(${w(hi - lo)}, 3px)`;
  return h("div", { class: "bar", title: final === undefined ? `[${lo}, ${hi}) of ${count}` : `${final} of ${count}` }, sel);
}

function stageView(s, i) {
  const names = { unit: "Unit (result tree)", op: "Op (trace tree)", leaf: "Tensor leaf (op output tree)", element: "Element (one step)" };
  const rows = [];
  if (s.level === "element") {
    rows.push(h("div", { class: "row" }, h("span", { class: "range", title: "the elements of the revealed leaf" }, `${s.leaf_first.toLocaleString()}–${s.leaf_last.toLocaleString()}`),
      bar(s.leaf_last - s.leaf_first + 1, s.final - s.leaf_first, s.final - s.leaf_first + 1, s.final)));
  } else {
    s.steps.forEach((st, k) => rows.push(h("div", { class: "row" },
      h("span", { class: "range" }, k === 0 ? `all ${s.count.toLocaleString()}` : st.hi - st.lo === 1 ? `${s.level} ${st.lo.toLocaleString()}` : `${st.lo.toLocaleString()}–${(st.hi - 1).toLocaleString()}`),
      bar(s.count, st.lo, st.hi))));
  }
  let found = s.final === null || s.final === undefined ? "not reached yet" : `${s.level} ${Number(s.final).toLocaleString()}`;
  if (s.level === "op" && s.op && s.op.opcode) found += ` — ${s.op.opcode} → ${s.op.out}`;
  if (s.level === "element") found += ` (byte ${s.byte.toLocaleString()}, ${s.width}-byte elements)`;
  if (s.data_bytes !== undefined) found += s.data_bytes === null ? " — not answered" : ` — answered with ${s.data_bytes} bytes`;
  return h("section", { class: `stage ${s.level}` },
    h("h3", {}, h("span", { class: "step-no" }, String(i + 1)), names[s.level] || s.level),
    h("p", { class: "found" }, found),
    h("p", { class: "muted" }, s.level === "element" ? "the verifier recomputed this element on-chain" : `${s.what}: ${s.count.toLocaleString()} in all, ${plural(s.steps.length - 1, "pick")}`),
    rows);
}

async function viewGame(id) {
  const g = await api(`/api/games/${id}`);
  const res = g.result;
  const out = [h("h1", {}, `Dispute game ${g.id} `, badge(g.outcome)),
    h("p", { class: `summary ${res ? (res.winner === "challenger" ? "lost" : "held") : ""}` }, g.summary),
    facts([["job", h("a", { href: `#/job/${g.job}` }, `#${g.job}`)], ["kind", g.kind],
      ["challenger", addr(g.challenger, "watchtower")], ["worker", addr(g.worker, "worker")], ["bond", eth(g.bond)],
      ["moves", `${g.moves_by_side.worker} by the worker, ${g.moves_by_side.challenger} by the challenger`],
      ["gas", g.gas_total.toLocaleString()],
      ["phase now", `${g.live.phase}` + (res ? "" : `, ${g.live.turn} to move`)],
      ["clocks left", `worker ${clock(g.live.clocks.worker)}, challenger ${clock(g.live.clocks.challenger)} (of ${clock(g.clock_seconds)} each)`],
      !res && g.live.deadline && ["mover's clock runs out", when(g.live.deadline)]]),
    h("h2", {}, "Bisection path"), h("div", { class: "path" }, g.path.map(stageView)),
    h("h2", {}, "Moves"),
    table(["#", "side", "move", "phase", "what", "gas", "time taken", "worker clock", "challenger clock", "block"],
      g.moves.map((m) => [String(m.n), badge(m.side), m.action, m.phase, m.resolves ? [m.text, " ", badge(`${m.resolves.outcome} (${m.resolves.reason})`)] : m.text,
        m.gas.toLocaleString(), span(m.used_seconds), clock(m.clock_left.worker), clock(m.clock_left.challenger), String(m.block)]), "moves")];
  return out;
}

// ------------------------------------------------------------------ routing and live updates
const routes = [
  [/^#\/jobs?$/, viewJobs, "jobs"], [/^#\/job\/(\d+)$/, viewJob, "jobs"],
  [/^#\/workers$/, viewWorkers, "workers"], [/^#\/worker\/(0x[0-9a-fA-F]{40})$/, viewWorker, "workers"],
  [/^#\/watchtowers$/, viewTowers, "watchtowers"], [/^#\/watchtower\/(0x[0-9a-fA-F]{40})$/, viewTower, "watchtowers"],
  [/^#\/games$/, viewGames, "games"], [/^#\/game\/(\d+)$/, viewGame, "games"],
];

async function render() {
  if (rendering) { pending = true; return; }
  rendering = true;
  try {
    const hash = location.hash || "#/jobs";
    const r = routes.find(([re]) => re.test(hash)) || routes[0];
    const m = hash.match(r[0]) || [];
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === r[2]));
    let nodes;
    try {
      nodes = await r[1](m[1]);
    } catch (e) {
      nodes = [h("p", { class: "alert" }, `Cannot show this: ${e.message}`)];
    }
    lastRender = Date.now();
    const y = window.scrollY;
    main.replaceChildren(...nodes);
    window.scrollTo(0, y);
  } finally {
    rendering = false;
    if (pending) { pending = false; render(); }
  }
}

function showHead(d) {
  if (d.now) now = d.now;
  const el = document.getElementById("head");
  el.textContent = d.rpc_error ? `chain unreachable: ${d.rpc_error}` : `block ${d.head.toLocaleString()} · ${utc(d.now)}`;
  el.classList.toggle("warn", !!d.rpc_error);
}

async function overview() {
  try {
    const o = await api("/api/overview");
    showHead(o);
    document.getElementById("chain").title = `chain ${o.chain_id} ${o.network || ""} · market ${o.contracts.market}`;
    return o.head;
  } catch (e) {
    document.getElementById("head").textContent = `explorer unreachable (${e.message})`;
    return null;
  }
}

function follow() {
  const live = document.getElementById("live");
  if (!window.EventSource) return poll();
  const es = new EventSource("/api/stream");
  es.addEventListener("head", (ev) => {
    const d = JSON.parse(ev.data);
    showHead(d);
    live.className = "dot on";
    // Redraw when an event arrived (every state change emits one), else every 10 s for relative times:
    // a devnet mines a block a second, and a redraw each second would lose the reader's selection.
    if (d.events !== seenEvents || Date.now() - lastRender > REDRAW_MS) { seenEvents = d.events; render(); }
  });
  es.onerror = () => { live.className = "dot off"; }; // EventSource reconnects by itself
}

async function poll() {
  let last = null;
  for (;;) {
    const head = await overview();
    if (head !== null && head !== last) { last = head; render(); }
    await new Promise((r) => setTimeout(r, 3000));
  }
}

window.addEventListener("hashchange", render);
overview().then(() => { render(); follow(); });
