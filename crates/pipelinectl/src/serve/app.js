// The live page: polls the server's read-only JSON endpoints and draws what they say.
// Every panel shows its store's status; a store that is down leaves the last values
// on screen with their time, and the other panels keep updating.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const LEVELS_EVERY_MS = 1000;
const MOVES_EVERY_MS = 5000;
const HEALTH_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);
const pad = (n) => String(n).padStart(2, "0");
const clock = (ms) => {
  const t = new Date(ms);
  return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
};
const number = (n) => Number(n).toLocaleString("en");

function element(name, attributes = {}, text) {
  const node = name.startsWith("svg:")
    ? document.createElementNS(SVG, name.slice(4))
    : document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function showStatus(node, reading) {
  node.dataset.status = reading.status;
  node.textContent = reading.status === "up" ? "up" : `down: ${reading.error}`;
}

function showUnreachable(node, error) {
  node.dataset.status = "down";
  node.textContent = `down: the page's server does not answer (${error.message})`;
}

function showTime(node, ms) {
  node.textContent = clock(ms);
  node.dateTime = new Date(ms).toISOString();
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// Each poll starts `ms` after the last one ended, so a slow store never stacks requests.
function every(ms, poll) {
  const run = async () => {
    try {
      await poll();
    } finally {
      setTimeout(run, ms);
    }
  };
  run();
}

// --- players per level ------------------------------------------------------------

async function pollLevels() {
  const status = $("levels-status");
  let reading;
  try {
    reading = await getJson("/api/levels");
  } catch (error) {
    showUnreachable(status, error);
    return;
  }
  showStatus(status, reading);
  if (reading.status !== "up") return;
  const rows = reading.data.map((level) => {
    const row = element("tr");
    row.dataset.level = level.levelId;
    row.dataset.count = String(level.playerCount);
    row.append(element("th", { scope: "row" }, level.levelId));
    row.append(element("td", { class: "number" }, number(level.playerCount)));
    return row;
  });
  const table = $("levels");
  table.tBodies[0].replaceChildren(...rows);
  const total = reading.data.reduce((sum, level) => sum + level.playerCount, 0);
  $("levels-total").textContent = number(total);
  table.dataset.updatedAt = String(reading.at_ms);
  showTime($("levels-updated"), reading.at_ms);
  offerLevels(reading.data.map((level) => level.levelId));
}

// --- moves between levels -----------------------------------------------------------

async function pollMoves() {
  const status = $("flow-status");
  let reading;
  try {
    reading = await getJson("/api/transitions");
  } catch (error) {
    showUnreachable(status, error);
    return;
  }
  showStatus(status, reading);
  if (reading.status !== "up") return;
  drawFlow(reading.data);
  $("moves").tBodies[0].replaceChildren(
    ...reading.data.map((move) => {
      const row = element("tr");
      row.append(element("td", {}, move.from), element("td", {}, move.to));
      row.append(element("td", { class: "number" }, number(move.count)));
      return row;
    }),
  );
  offerLevels(reading.data.flatMap((move) => [move.from, move.to]));
}

// Levels on a circle, a curved arrow per move, its width by its count and its count
// written on it. a→b and b→a bend to opposite sides, so both stay readable.
function drawFlow(moves) {
  const box = $("flow");
  if (moves.length === 0) {
    box.replaceChildren(element("p", {}, "No moves between levels in the last hour."));
    return;
  }
  const levels = [...new Set(moves.flatMap((move) => [move.from, move.to]))].sort();
  const width = 640;
  const height = 400;
  const nodeRadius = 10;
  const ring = Math.min(width, height) / 2 - 60;
  // Each level on the ring, its name further out so no arrow crosses it.
  const at = new Map(
    levels.map((level, i) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / levels.length;
      const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
      const label = ring + nodeRadius + 22;
      return [
        level,
        { x: width / 2 + ring * dx, y: height / 2 + ring * dy, labelX: width / 2 + label * dx, labelY: height / 2 + label * dy },
      ];
    }),
  );
  const busiest = Math.max(...moves.map((move) => move.count), 1);
  const svg = element("svg:svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "flow-title",
  });
  svg.append(element("svg:title", { id: "flow-title" }, `Moves between ${levels.length} levels in the last hour`));
  const defs = element("svg:defs");
  const marker = element("svg:marker", {
    id: "arrow",
    viewBox: "0 0 10 10",
    refX: 10,
    refY: 5,
    markerWidth: 10,
    markerHeight: 10,
    markerUnits: "userSpaceOnUse",
    orient: "auto",
  });
  marker.append(element("svg:path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  defs.append(marker);
  svg.append(defs);
  for (const move of moves) {
    const a = at.get(move.from);
    const b = at.get(move.to);
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const length = Math.hypot(dx, dy) || 1;
    // The control point: off the straight line by a fifth of its length, to its left.
    const q = { x: (a.x + b.x) / 2 - (dy / length) * length * 0.2, y: (a.y + b.y) / 2 + (dx / length) * length * 0.2 };
    const toward = (p, t) => {
      const d = Math.hypot(t.x - p.x, t.y - p.y) || 1;
      return { x: p.x + ((t.x - p.x) / d) * (nodeRadius + 2), y: p.y + ((t.y - p.y) / d) * (nodeRadius + 2) };
    };
    const start = toward(a, q);
    const end = toward(b, q);
    const path = element("svg:path", {
      d: `M${start.x},${start.y} Q${q.x},${q.y} ${end.x},${end.y}`,
      class: "link",
      "stroke-width": (1.5 + (10 * move.count) / busiest).toFixed(1),
      "marker-end": "url(#arrow)",
    });
    path.dataset.from = move.from;
    path.dataset.to = move.to;
    path.dataset.count = String(move.count);
    path.append(element("svg:title", {}, `${move.from} → ${move.to}: ${move.count}`));
    svg.append(path);
    // The curve's middle, where its count is written.
    const mid = { x: 0.25 * start.x + 0.5 * q.x + 0.25 * end.x, y: 0.25 * start.y + 0.5 * q.y + 0.25 * end.y };
    svg.append(element("svg:text", { x: mid.x, y: mid.y, class: "link-label" }, number(move.count)));
  }
  for (const level of levels) {
    const p = at.get(level);
    svg.append(element("svg:circle", { cx: p.x, cy: p.y, r: nodeRadius, class: "node" }));
    svg.append(element("svg:text", { x: p.labelX, y: p.labelY, class: "node-label" }, level));
  }
  box.replaceChildren(svg);
}

// --- heat map -----------------------------------------------------------------------

// Levels seen on the live panels become choices; the chosen one stays.
function offerLevels(levels) {
  const select = $("heatmap-level");
  const chosen = select.value;
  const known = [...select.options].map((option) => option.value);
  const all = [...new Set([...known, ...levels])].sort();
  if (all.length === known.length) return;
  select.replaceChildren(...all.map((level) => new Option(level, level)));
  // First choice: the busiest level (the levels panel lists it first).
  select.value = chosen || levels[0] || all[0];
  if (!chosen) drawHeatmap();
}

function heatmapUrl() {
  const parameters = new URLSearchParams({
    level: $("heatmap-level").value,
    event_type: $("heatmap-event-type").value.trim() || "player_death",
    since: $("heatmap-range").value,
  });
  return `/heatmap.png?${parameters}`;
}

// One fetch per choice: the PNG becomes a blob URL (the old one revoked), its event
// count comes from X-Heatmap-Events, and a failure shows the server's own words. A
// request newer than this one drops this one's answer, whichever comes back first.
let heatmapRequests = 0;

async function drawHeatmap() {
  if (!$("heatmap-level").value) return;
  const request = ++heatmapRequests;
  const image = $("heatmap");
  const status = $("heatmap-status");
  const url = heatmapUrl();
  const described = `${$("heatmap-event-type").value.trim() || "player_death"} on ${$("heatmap-level").value}, ${
    $("heatmap-range").selectedOptions[0].textContent
  }`;
  status.dataset.status = "loading";
  status.textContent = `drawing ${described}…`;
  let response;
  let failure;
  try {
    response = await fetch(url, { cache: "no-store" });
    if (!response.ok) {
      const message = (await response.text()).trim() || `HTTP ${response.status}`;
      failure = message.startsWith("warehouse down: ") ? `down: ${message.slice(16)}` : message;
    }
  } catch (error) {
    failure = `down: the page's server does not answer (${error.message})`;
  }
  let picture;
  if (failure === undefined) {
    try {
      picture = await response.blob();
    } catch (error) {
      failure = `the heat map broke off (${error.message})`;
    }
  }
  if (request !== heatmapRequests) return;
  if (failure !== undefined) {
    image.hidden = true;
    status.dataset.status = "down";
    status.textContent = failure;
    return;
  }
  const events = Number(response.headers.get("X-Heatmap-Events"));
  const old = image.dataset.blob;
  image.dataset.blob = URL.createObjectURL(picture);
  image.src = image.dataset.blob;
  // The image now loads the new URL: the old picture's memory can go.
  if (old) URL.revokeObjectURL(old);
  image.dataset.url = url;
  image.dataset.events = String(events);
  image.alt = `Heat map of ${described}: ${number(events)} events`;
  image.hidden = false;
  status.dataset.status = "up";
  status.textContent = `${described}: ${number(events)} events, drawn at ${clock(Date.now())}`;
}

// --- pipeline health ----------------------------------------------------------------

function ago(ms) {
  const seconds = Math.round(ms / 1000);
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

async function pollHealth() {
  let health;
  try {
    health = await getJson("/api/health");
  } catch (error) {
    showUnreachable($("lake-status"), error);
    showUnreachable($("warehouse-status"), error);
    return;
  }
  showStatus($("lake-status"), health.lake);
  showStatus($("warehouse-status"), health.warehouse);
  const { loaded, rejected } = health.landed;
  const rate = (n) => n.toFixed(1);
  const over = (ms) => (ms >= 120000 ? `${Math.round(ms / 60000)} min` : `${Math.round(ms / 1000)} s`);
  $("health-rate").textContent =
    loaded === null && rejected === null
      ? `measuring: the first rate after a minute, then over up to ${over(health.landed.window_ms)}`
      : `${rate((loaded?.per_second ?? 0) + (rejected?.per_second ?? 0))}/s: ${
          loaded === null ? "? (measuring)" : rate(loaded.per_second)
        } loaded, ${rejected === null ? "? (measuring)" : rate(rejected.per_second)} rejected, over the last ${over(
          Math.max(loaded?.over_ms ?? 0, rejected?.over_ms ?? 0),
        )}`;
  if (health.lake.data) {
    const lake = health.lake.data;
    const since = lake.since_ms === undefined ? "" : ` (files from ${clock(lake.since_ms)} on)`;
    const reasons = Object.entries(lake.rejected);
    const unread = lake.errors_files_unread > 0 ? `; ${number(lake.errors_files_unread)} files not read yet` : "";
    $("health-rejects").textContent =
      (reasons.length === 0 ? "none" : reasons.map(([reason, count]) => `${reason} ${number(count)}`).join(", ")) +
      unread;
    $("health-lake-files").textContent = `${number(lake.events_objects.objects)} event files, ${number(
      lake.errors_objects.objects,
    )} error files${since}`;
  }
  if (health.warehouse.data) {
    const totals = health.warehouse.data;
    $("health-rows").textContent = `${number(totals.rows_loaded)} rows from ${number(totals.files_loaded)} files; ${number(
      totals.rows_staged - totals.rows_loaded,
    )} duplicates dropped`;
    $("health-age").textContent =
      totals.last_load_ms === null ? "no load yet" : `${ago(health.last_load_age_ms)} (${clock(totals.last_load_ms)})`;
  }
  showTime($("health-updated"), Math.max(health.lake.at_ms, health.warehouse.at_ms));
}

document.addEventListener("DOMContentLoaded", () => {
  const form = $("heatmap-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    drawHeatmap();
  });
  form.addEventListener("change", drawHeatmap);
  every(LEVELS_EVERY_MS, pollLevels);
  every(MOVES_EVERY_MS, pollMoves);
  every(HEALTH_EVERY_MS, pollHealth);
});
