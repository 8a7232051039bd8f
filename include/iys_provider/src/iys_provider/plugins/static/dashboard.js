// The İYS page: fetches /iys/api/* (same origin: the browser sends the Airflow UI's session cookie)
// and draws each panel. A figure the server sends as null is one nothing records yet: "not recorded".
"use strict";

const API = new URL("api/", document.baseURI);
// The page lives at <airflow>/iys/: links to DAG runs and tasks are relative to <airflow>/.
const AIRFLOW = new URL("../", document.baseURI);
const NOT_RECORDED = "not recorded";
const COLORS = { ONAY: "#2f855a", RET: "#c53030", unknown: "#a0aec0" };
const charts = {};
const PUSH_REFRESH_MS = 30_000;

// Airflow renders the page in an iframe sandboxed without allow-top-navigation, so a link cannot
// navigate the Airflow UI around it; being same-origin, the page clicks a link in the UI's document.
function openInAirflow(href) {
  try {
    const doc = window.top.document;
    const anchor = Object.assign(doc.createElement("a"), { href, hidden: true });
    doc.body.append(anchor);
    anchor.click();
    anchor.remove();
  } catch {
    window.location.href = href;
  }
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[target=_top]");
  if (!anchor || !anchor.href || event.button || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  openInAirflow(anchor.href);
});

const fmt = (n) => (n === null || n === undefined ? NOT_RECORDED : Number(n).toLocaleString("en-US"));
const pct = (x) => (x === null || x === undefined ? NOT_RECORDED : `${(100 * x).toFixed(1)} %`);

// Times are shown in the Airflow UI's time zone: the user's choice, which the UI keeps in the
// browser's localStorage under "timezone" (JSON-encoded; same origin, so this page reads it),
// else the browser's own zone, as the UI itself defaults (Airflow 3 has no server-side UI zone).
// Legal deadlines are days of Turkish law: always Turkey time, labelled as such.
const UI_TIMEZONE_KEY = "timezone";
const TURKEY = "Europe/Istanbul";

function validZone(zone) {
  try { new Intl.DateTimeFormat("en-US", { timeZone: zone }); return true; } catch { return false; }
}

function uiTimeZone() {
  let chosen = null;
  try {
    const raw = window.localStorage.getItem(UI_TIMEZONE_KEY);
    if (raw) { try { chosen = JSON.parse(raw); } catch { chosen = raw; } }
  } catch { /* storage refused: the browser's zone */ }
  if (typeof chosen === "string" && chosen && validZone(chosen)) return chosen;
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

let zone = uiTimeZone();

// "2026-12-01 15:00 UTC+3": the moment in `tz`, with its offset as a label ("UTC" for UTC itself).
function inZone(iso, tz) {
  const parts = {};
  new Intl.DateTimeFormat("en-US", {
    timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZoneName: "shortOffset",
  }).formatToParts(new Date(iso)).forEach((p) => { parts[p.type] = p.value; });
  // Intl says "GMT", "GMT+0" or "GMT+3": a zero offset is plain "UTC".
  const offset = /^GMT([+-]0)?$/.test(parts.timeZoneName) ? "UTC" : parts.timeZoneName.replace("GMT", "UTC");
  return { date: `${parts.year}-${parts.month}-${parts.day}`, time: `${parts.hour}:${parts.minute}`, offset };
}

const when = (iso) => {
  if (!iso) return NOT_RECORDED;
  const t = inZone(iso, zone);
  return `${t.date} ${t.time} ${t.offset}`;
};
const whenShort = (iso) => { const t = inZone(iso, zone); return `${t.date.slice(5)} ${t.time}`; };
const legalDeadline = (iso) => {
  const t = inZone(iso, TURKEY);
  return `${t.date} ${t.time} Turkey time (${t.offset})`;
};

// Nothing to wait for: one line in place of the table, not a bare header.
function emptyNote(table, text) {
  table.replaceChildren();
  const tr = table.insertRow();
  const td = cell(text, "muted empty");
  td.colSpan = 8;
  tr.append(td);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (text === NOT_RECORDED) td.className = "not-recorded";
  else if (cls) td.className = cls;
  return td;
}

function rows(table, entries, header) {
  table.replaceChildren();
  if (header) {
    const tr = table.insertRow();
    header.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.append(th); });
  }
  for (const entry of entries) {
    const tr = table.insertRow();
    entry.forEach((value) => tr.append(Array.isArray(value) ? cell(...value) : cell(String(value))));
  }
}

function panel(id, { ready, level, link }) {
  const el = document.getElementById(id);
  el.dataset.state = ready ? "ready" : "empty";
  el.dataset.level = level || "none";
  const anchor = el.querySelector("a.source");
  if (anchor) {
    if (link) { anchor.href = new URL(link, AIRFLOW).href; anchor.hidden = false; } else { anchor.hidden = true; }
  }
  return el;
}

function chart(id, config) {
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart(document.getElementById(id), { ...config, options: { animation: false, maintainAspectRatio: false, ...config.options } });
}

function drawConsents(c) {
  const el = panel("panel-consents", { ready: c.total > 0, link: c.link });
  const channels = Object.keys(c.counts);
  chart("chart-consents", {
    type: "bar",
    data: {
      labels: channels,
      datasets: ["ONAY", "RET", "unknown"].map((s) => ({ label: s, data: channels.map((ch) => c.counts[ch][s]), backgroundColor: COLORS[s] })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true } } },
  });
  const sendable = (ch) => (c.sendable ? fmt(c.sendable[ch]) : NOT_RECORDED);
  const heldOut = (ch) => fmt((c.held_out_now || {})[ch] || 0);
  rows(el.querySelector("table"), channels.map((ch) => [ch, fmt(c.counts[ch].ONAY), fmt(c.counts[ch].RET), fmt(c.counts[ch].unknown), [sendable(ch), "ok"], heldOut(ch)]),
    ["channel", "ONAY", "RET", "unknown", "sendable users", "ONAY held out now by opt-outs not yet in İYS"]);
  el.querySelector("table").createCaption().textContent = `sendable counted ${when(c.sendable_counted_at)}`;
  el.querySelector(".sendable-note").textContent =
    "Sendable users can exceed ONAY: several users may share one phone number or e-mail address, and each of them counts.";
}

function drawInitialSync(s) {
  const el = panel("panel-initial-sync", { ready: s !== null, level: s && s.level, link: s && s.link });
  const table = el.querySelector("table");
  if (!s) { rows(table, [["scan", [NOT_RECORDED]]]); return; }
  el.querySelector(".bar").style.width = `${s.batch_count ? (100 * s.batches_done) / s.batch_count : 0}%`;
  rows(table, [
    ["batches done", `${fmt(s.batches_done)} of ${fmt(s.batch_count)}`],
    ["users processed", `${fmt(s.users_done)} of ${fmt(s.total_users)}`],
    ["request rate (finished batches)", s.requests_per_second === null ? [NOT_RECORDED] : `${s.requests_per_second.toFixed(2)} req/s`],
    ["learned rate (shared limiter)", s.learned_rate === null ? [NOT_RECORDED] : `${s.learned_rate.toFixed(2)} req/s`],
    ["started", when(s.started_at)],
    [s.finished_at ? "finished" : "estimated finish", [when(s.finished_at || s.estimated_finish), s.level]],
  ]);
}

// Seven series share one axis and often one value (a quiet run: all zero; pulled = applied): each
// has its own dash and point style, so a line lying on another still shows, and the table below
// the chart gives every run's figures.
const RUN_SERIES = [
  ["pulled", "#3182ce", [], "circle"],
  ["applied", "#2f855a", [8, 4], "rect"],
  ["new_users", "#805ad5", [2, 3], "triangle"],
  ["pushed", "#38a169", [12, 3, 2, 3], "rectRot"],
  ["skipped", "#718096", [4, 4], "crossRot"],
  ["rejected", "#dd6b20", [1, 5], "star"],
  ["failed", "#c53030", [10, 6], "rectRounded"],
];

function feedLagNote(r, latest) {
  if (latest && latest.feed_lag_days !== null) {
    return `latest run's feed lag: ${(24 * latest.feed_lag_days).toFixed(1)} h (warning from 6 days; İYS serves 7 days of movements)`;
  }
  // A run that pulled nothing records no lag: say how current the feed is instead, from the last
  // time every change stream was read to its end.
  if (latest && latest.pulled === 0 && r.feed_read_to_end_at) {
    return `feed caught up: nothing new in the latest run; every change stream read to its end at ${when(r.feed_read_to_end_at)}`;
  }
  return `latest run's feed lag: ${NOT_RECORDED}`;
}

function drawRuns(r) {
  const el = panel("panel-runs", { ready: r.rows.length > 0, link: r.link });
  const latest = r.rows[r.rows.length - 1];
  const note = el.querySelector(".lag-note");
  note.textContent = feedLagNote(r, latest);
  note.className = `lag-note ${latest && latest.feed_lag_days !== null ? latest.feed_lag_level : latest && r.feed_read_to_end_at && latest.pulled === 0 ? "ok" : ""}`;
  const labels = r.rows.map((x) => whenShort(x.finished_at));
  const open = (event, elements) => { if (elements.length) openInAirflow(new URL(r.rows[elements[0].index].link, AIRFLOW).href); };
  chart("chart-runs", {
    type: "line",
    data: {
      labels,
      // The legend carries each series' latest value: series on the same line still read apart.
      datasets: RUN_SERIES.map(([key, color, dash, pointStyle]) => ({
        label: `${key.replace("_", " ")} (latest ${fmt(latest ? latest[key] : null)})`,
        data: r.rows.map((x) => x[key]), borderColor: color, backgroundColor: color,
        borderDash: dash, pointStyle, pointRadius: 4, pointHoverRadius: 6, borderWidth: 2,
        clip: false,  // a series on 0 is drawn whole on the axis, not cut in half
      })),
    },
    options: {
      onClick: open,
      interaction: { mode: "index", intersect: false },  // the tooltip lists every series of the run
      // Counts: from 0, whole numbers; an all-zero run gets 0…5, not Chart.js's −1…1.
      scales: { y: { min: 0, suggestedMax: 5, ticks: { precision: 0 } } },
      plugins: {
        title: { display: true, text: `movements and outbox per run (times in ${zone}); click a point: its report task` },
        legend: { labels: { usePointStyle: true } },
      },
    },
  });
  chart("chart-lag", {
    type: "bar",
    data: {
      labels,
      datasets: [
        { label: "feed lag (days)", data: r.rows.map((x) => x.feed_lag_days), backgroundColor: r.rows.map((x) => ({ ok: "#3182ce", warning: "#b7791f", danger: "#c53030" })[x.feed_lag_level] || "#a0aec0") },
        { type: "line", label: "warning (6 days)", data: r.rows.map(() => 6), borderColor: "#b7791f", pointRadius: 0 },
        { type: "line", label: "İYS window (7 days)", data: r.rows.map(() => 7), borderColor: "#c53030", pointRadius: 0 },
      ],
    },
    options: { onClick: open, scales: { y: { beginAtZero: true, suggestedMax: 7.5 } } },
  });
  // One row per run, newest first, with a link to the run itself.
  const table = el.querySelector("table.runs");
  const newestFirst = [...r.rows].reverse();
  rows(table, newestFirst.map((x) => [
    when(x.finished_at), fmt(x.pulled), fmt(x.applied), fmt(x.new_users), fmt(x.pushed), fmt(x.skipped),
    [fmt(x.rejected), x.rejected ? "warning" : ""], [fmt(x.failed), x.failed ? "danger" : ""],
    x.feed_lag_days === null ? "–" : [`${(24 * x.feed_lag_days).toFixed(1)} h`, x.feed_lag_level], "run",
  ]), ["finished", "pulled", "applied", "new users", "pushed", "skipped", "rejected", "failed", "feed lag", ""]);
  table.querySelectorAll("tr").forEach((tr, i) => {
    const run = newestFirst[i - 1];
    if (!run) return;
    tr.dataset.runId = run.run_id;
    const a = Object.assign(document.createElement("a"), { href: new URL(run.run_link, AIRFLOW).href, target: "_top", textContent: "run" });
    a.title = run.run_id;
    tr.lastElementChild.replaceChildren(a);
  });
}

function drawOutbox(o) {
  const el = panel("panel-outbox", { ready: o.by_state.length > 0, level: o.level, link: o.link });
  rows(el.querySelector("table.deadline"), [
    ["unsent opt-outs (RET)", fmt(o.unsent_rets)],
    ["due within 24 h", [fmt(o.due_within_24h), o.due_within_24h ? "danger" : ""]],
    ["past their deadline", [fmt(o.overdue_rets), o.overdue_rets ? "danger" : ""]],
    ["oldest unsent RET's legal deadline", [o.earliest_deadline ? legalDeadline(o.earliest_deadline) : "none pending", o.level]],
  ]);
  if (o.by_state.length) {
    rows(el.querySelector("table.states"), o.by_state.map((x) => [x.state, x.code || "–", fmt(x.count)]), ["state", "code", "rows"]);
  } else {
    emptyNote(el.querySelector("table.states"), "Nothing waiting: the outbox holds no consent change.");
  }
  rows(
    el.querySelector("table.undelivered"),
    o.undelivered.map((x) => [
      x.id, x.type, x.state, x.code || "–", when(x.consent_date),
      [legalDeadline(x.deadline), x.acknowledged_at ? "" : x.overdue ? "danger" : "warning"],
      x.acknowledged_at ? when(x.acknowledged_at) : "–",
    ]),
    o.undelivered.length ? ["RET not in İYS (outbox id)", "channel", "state", "code", "consent date", "legal deadline", "acknowledged"] : null,
  );
}

function drawQuarantine(q) {
  panel("panel-quarantine", { ready: q.by_reason.length > 0, link: q.link });
  chart("chart-quarantine", {
    type: "bar",
    data: { labels: q.by_reason.map((x) => x.reason), datasets: [{ label: "source values quarantined", data: q.by_reason.map((x) => x.count), backgroundColor: "#dd6b20" }] },
    options: { indexAxis: "y" },
  });
}

function drawBudget(b) {
  const levels = b.keys.flatMap((k) => [k.token_level, k.ratio_level, k.requests_level]);
  const level = levels.includes("danger") ? "danger" : levels.includes("warning") ? "warning" : "ok";
  const el = panel("panel-budget", { ready: b.keys.length > 0, level, link: b.link });
  const box = el.querySelector(".keys");
  box.replaceChildren();
  if (!b.keys.length) { box.textContent = NOT_RECORDED; box.className = "keys not-recorded"; return; }
  for (const k of b.keys) {
    const h = document.createElement("h3");
    // The key names İYS's host (and the egress label), not the client IP İYS counts against.
    h.textContent = `İYS host ${k.iys_host}${k.egress_label ? `, egress ${k.egress_label}` : ""}`;
    h.title = `budget and limiter key: ${k.budget_key}`;
    const table = document.createElement("table");
    table.className = "figures";
    rows(table, [
      ["token requests, last hour", [`${fmt(k.token_requests_last_hour)} of ${k.token_limit}`, k.token_level]],
      ["H084 block", k.blocked_until ? [`until ${when(k.blocked_until)}`, "danger"] : ["none", "ok"]],
      [`requests since ${k.requests_since ? when(k.requests_since) : "–"}`, [fmt(k.requests)]],
      ["of which 429", [fmt(k.rate_limited), k.requests_level]],
      ["success ratio, 24 h (İYS line 70 %)", [pct(k.success_ratio_24h), k.ratio_level]],
      ["learned request rate", k.learned_rate === null ? [NOT_RECORDED] : `${k.learned_rate.toFixed(2)} req/s`],
    ]);
    box.append(h, table);
  }
}

function drawReconciliation(r) {
  const el = panel("panel-reconciliation", { ready: r !== null && r.days.length > 0, level: r && r.level });
  const table = el.querySelector("table");
  if (r === null) { rows(table, [["status per day", [NOT_RECORDED]]]); return; }
  const evidence = (d) => (d.evidence_kept ? "file and .tsr archived" : d.agreed_at ? ["no evidence kept", "warning"] : "–");
  rows(table, r.days.map((d) => [d.report_date, [d.status, { mismatch: "danger", hash_error: "danger", pending: "warning" }[d.status] || "ok"], when(d.agreed_at), evidence(d)]),
    ["day (Turkey time)", "status", "agreed at", "evidence"]);
  table.querySelectorAll("tr").forEach((tr, i) => {
    const day = r.days[i - 1];
    if (day && day.link) {
      const a = document.createElement("a");
      a.href = new URL(day.link, AIRFLOW).href; a.target = "_top"; a.textContent = tr.cells[0].textContent;
      tr.cells[0].replaceChildren(a);
    }
  });
}

const NO_PUSH = "no push received";
const seconds = (x) => (x === null || x === undefined ? "–" : x.toFixed(1));

function drawPush(p) {
  const heard = p.channels.filter((c) => c.heard_from);
  const el = panel("panel-push", { ready: heard.length > 0, level: p.level, link: p.link });
  // Figures down, channels across. A channel the receiver never heard from (Push not set up, or
  // İYS not reaching it) says so in its first cell; its other cells are unknown, not zeros.
  const figures = [
    ["last push", (c) => (c.last_push_at ? when(c.last_push_at) : "none yet")],
    ["last registration test record", (c) => (c.last_test_at ? when(c.last_test_at) : "none yet")],
    ["received, last hour", (c) => fmt(c.received_last_hour)],
    ["applied, last hour", (c) => fmt(c.applied_last_hour)],
    ["lag p50 / p95 / max, last hour", (c) => (c.applied_last_hour ? `${seconds(c.lag_p50_seconds)} / ${seconds(c.lag_p95_seconds)} / ${seconds(c.lag_max_seconds)} s` : "–")],
    ["not applied yet", (c) => [c.unapplied ? `${fmt(c.unapplied)} (oldest ${when(c.oldest_unapplied_received_at)})` : "0", c.unapplied ? c.level : ""]],
    ["applied, not announced yet", (c) => fmt(c.not_announced)],
    ["quarantined, 24 h", (c) => [fmt(c.quarantined_24h), c.quarantined_24h ? "warning" : ""]],
  ];
  const column = (c, figure, i) => (c.heard_from ? figure(c) : i === 0 ? [NO_PUSH, "not-recorded"] : "–");
  rows(el.querySelector("table"), figures.map(([label, figure], i) => [label, ...p.channels.map((c) => column(c, figure, i))]),
    ["", ...p.channels.map((c) => c.channel)]);
  el.querySelector("table").createCaption().textContent = `as of ${when(p.generated_at)}, refreshed every 30 s`;
}

async function getJSON(path) {
  const response = await fetch(new URL(path, API), { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status} ${(await response.json().catch(() => ({}))).detail || response.statusText}`);
  return response.json();
}

async function load(brand) {
  try {
    const data = await getJSON(`panels/${brand}`);
    document.getElementById("generated").textContent = `as of ${when(data.generated_at)}`;
    document.getElementById("zone").textContent = `times in ${zone} (the Airflow UI's time zone); legal deadlines in Turkey time (${TURKEY})`;
    drawConsents(data.consents);
    drawInitialSync(data.initial_sync);
    drawRuns(data.runs);
    drawOutbox(data.outbox);
    drawQuarantine(data.quarantine);
    drawBudget(data.budget);
    drawReconciliation(data.reconciliation);
    drawPush(data.push);
    document.body.dataset.loaded = brand;
    watchPush(brand);
  } catch (error) {
    const p = document.getElementById("error");
    p.textContent = String(error); p.hidden = false;
  }
}

// Pushes arrive within seconds, the other panels change with runs: only the push panel is refreshed.
let pushTimer = null;
function watchPush(brand) {
  clearInterval(pushTimer);
  pushTimer = setInterval(async () => {
    try {
      drawPush(await getJSON(`push/${brand}`));
    } catch (error) {
      const p = document.getElementById("error");
      p.textContent = String(error); p.hidden = false;
    }
  }, PUSH_REFRESH_MS);
}

// The user picks another zone in the Airflow UI (another window of this origin): redraw in it.
window.addEventListener("storage", (event) => {
  if (event.key !== UI_TIMEZONE_KEY && event.key !== null) return;
  zone = uiTimeZone();
  const brand = document.body.dataset.loaded;
  if (brand) load(brand);
});

async function main() {
  const select = document.getElementById("brand");
  try {
    const { brands } = await getJSON("brands");
    if (!brands.length) throw new Error("No brand synced yet: run the initial sync first");
    select.replaceChildren(...brands.map((b) => new Option(String(b), String(b))));
    select.closest("label").hidden = brands.length < 2;  // a selector only when there are several
    select.addEventListener("change", () => load(select.value));
    await load(brands[0]);
  } catch (error) {
    const p = document.getElementById("error");
    p.textContent = String(error); p.hidden = false;
  }
}

main();
