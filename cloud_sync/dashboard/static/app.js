// The fleet dashboard: plain JavaScript, no framework, no network but this collector (collectors run offline).
// Routes: #/ (fleet), #/device/<id>, #/rollout. Live: one EventSource on /api/events sends the fleet on change.
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token");
  const main = document.getElementById("main");
  let fleet = null;          // the last /api/fleet document
  let deviceTimer = null;
  let pending = false;       // a device or rollout page refresh is scheduled

  function url(path) {
    return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
  }
  async function getJSON(path) {
    const response = await fetch(url(path), { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }
  function esc(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function num(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits === undefined ? 1 : digits);
  }
  function ago(ts) {
    if (!ts) return "never";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return new Date(ts * 1000).toLocaleString();
  }
  function onlineText(online) { return online === true ? "online" : online === false ? "offline" : "unknown"; }
  function stateSpan(state, id) {
    return `<span class="state ${esc(state)}"${id ? ` data-state-of="${esc(id)}"` : ""}>${esc(state)}</span>`;
  }
  function bar(progress) {
    const pct = Math.round((progress || 0) * 100);
    return `<span class="bar" title="${pct}%"><span style="width:${pct}%"></span></span> <span class="pct">${pct}%</span>`;
  }
  function shadowText(shadow) {
    if (!shadow) return "";
    const conv = shadow.converter_agreement != null ? ` (converter ${esc(shadow.converter_agreement)})` : "";
    return `shadow: agreement ${esc(shadow.agreement ?? "–")} on ${esc(shadow.samples)} live inputs${conv}, ` +
      `latency ${esc(shadow.latency_ratio ?? "–")}x`;
  }
  function modelText(model) { return model && model.name ? `${esc(model.name)} v${esc(model.version)}` : "–"; }
  function updateText(update) {
    if (!update || !update.state) return "–";
    let text = stateSpan(update.state) + (update.version ? ` v${esc(update.version)}` : "");
    if (update.state === "downloading" || update.state === "shadowing") text += " " + bar(update.progress);
    if (update.shadow) text += ` <span class="muted">${shadowText(update.shadow)}</span>`;
    if (update.reason) text += ` <span class="muted">${esc(update.reason)}</span>`;
    return text;
  }

  // ------------------------------------------------------------------ fleet page
  function renderFleet() {
    if (!fleet) return;
    const rows = fleet.devices.map((d) => {
      const sources = Object.entries(d.sources || {}).map(([name, st]) => `${esc(name)}: ${stateSpan(st)}`).join(" ");
      const online = onlineText(d.online);
      return `<tr data-device="${esc(d.device)}">
        <td><a href="#/device/${encodeURIComponent(d.device)}">${esc(d.device)}</a></td>
        <td>${stateSpan(online, d.device)}</td><td class="muted">${ago(d.last_seen || d.last_result_ts)}</td>
        <td>${modelText(d.model)}</td><td>${updateText(d.update)}</td>
        <td class="num">${num(d.fps)}</td>
        <td class="num">${num(d.latency_ms && d.latency_ms.p50)} / ${num(d.latency_ms && d.latency_ms.p95)}</td>
        <td class="num">${d.outbox && d.outbox.pending !== null && d.outbox.pending !== undefined ? esc(d.outbox.pending) : "–"}
          <span class="muted">${d.outbox && d.outbox.oldest_age_s ? num(d.outbox.oldest_age_s, 0) + " s" : ""}</span></td>
        <td class="num results">${esc(d.results)}</td><td class="num">${esc(d.events)}</td>
        <td class="num">${esc(d.lost)}</td><td class="num">${d.repaired === null ? "–" : esc(d.repaired)}</td>
        <td>${sources || "–"}</td></tr>`;
    }).join("");
    const c = fleet.collector;
    main.innerHTML = `<section><h2>Devices (${fleet.devices.length})</h2>
      <table id="fleet"><thead><tr><th>device</th><th>state</th><th>last seen</th><th>model</th><th>update</th>
      <th>fps</th><th>latency p50 / p95 ms</th><th>outbox (oldest)</th><th>results</th><th>events</th>
      <th>lost</th><th>repaired</th><th>sources</th></tr></thead><tbody>${rows ||
      '<tr><td colspan="13" class="muted">no device has spoken yet</td></tr>'}</tbody></table></section>
      ${c ? `<p class="muted">collector: ${esc(c.received)} received, ${esc(c.stored)} stored, ${esc(c.duplicates)}
      duplicates, ${esc(c.invalid)} invalid, ${esc(c.replays_requested)} replays asked, ${esc(c.repaired)} repaired</p>` : ""}
      ${fleet.store_error ? `<p class="state offline">store: ${esc(fleet.store_error)}</p>` : ""}`;
  }

  // ------------------------------------------------------------------ device page
  function chart(series, key, color, label) {
    const points = series.filter((p) => p[key] !== null && p[key] !== undefined);
    const w = 420, h = 120;
    if (points.length < 2) return `<div class="card"><b>${esc(label)}</b><p class="muted">not enough telemetry yet</p></div>`;
    const t0 = points[0].ts, t1 = points[points.length - 1].ts || t0 + 1;
    const max = Math.max(...points.map((p) => p[key])) || 1;
    const xy = points.map((p) => `${((p.ts - t0) / (t1 - t0 || 1) * (w - 10) + 5).toFixed(1)},` +
      `${(h - 5 - p[key] / max * (h - 20)).toFixed(1)}`).join(" ");
    return `<div class="card"><b>${esc(label)}</b> <span class="muted">max ${num(max)}</span><br>
      <svg class="chart" data-series="${esc(key)}" width="${w}" height="${h}"><polyline stroke="${color}" points="${xy}"/></svg></div>`;
  }
  function snapshotURL(device, s) {
    return url(`/api/devices/${encodeURIComponent(device)}/snapshots/${encodeURIComponent(s.source)}?label=` +
      encodeURIComponent(s.label) + "&t=" + s.ts);
  }
  function renderDevice(d) {
    const snaps = (d.snapshots || []).map((s) => `<div class="card"><b>${esc(s.source)}${s.label ? " / " + esc(s.label) : ""}</b>
      <span class="muted">${ago(s.ts)}</span><img class="snapshot" alt="snapshot ${esc(s.source)} ${esc(s.label)}"
      src="${snapshotURL(d.device, s)}"></div>`).join("");
    const events = (d.events || []).map((e) => `<tr><td class="muted">${ago(e.ts)}</td><td>${esc(e.type)}</td>
      <td>${esc(e.source)}</td><td>${esc(e.label)}</td><td>${esc(e.track_id)}</td><td>${esc((e.zones || []).join(", "))}</td>
      <td class="num">${num(e.score, 2)}</td><td>${e.snapshot ? "yes" : ""}</td></tr>`).join("");
    const results = (d.results || []).map((r) => `<tr><td class="muted">${ago(r.ts)}</td><td class="num">${esc(r.seq)}</td>
      <td>${esc(r.input || r.source || "")}</td><td>${esc(summary(r))}</td>
      <td class="num">${num(r.timing_ms && r.timing_ms.total, 2)}</td></tr>`).join("");
    const models = (d.models || []).map((m) => `<tr><td class="muted">${ago(m.ts)}</td><td>${stateSpan(m.state)}</td>
      <td>${esc(m.name)} v${esc(m.version)}</td><td class="muted">${esc(m.reason)}</td></tr>`).join("");
    const replies = (d.replies || []).map((r) => `<tr><td class="muted">${ago(r.received)}</td><td>${esc(r.command)}</td>
      <td>${r.ok ? "ok" : "failed"}</td><td><pre>${esc(JSON.stringify(r))}</pre></td></tr>`).join("");
    const sources = Object.entries(d.sources || {}).map(([name, s]) => `<tr><td>${esc(name)}</td>
      <td>${stateSpan(s.state)}</td><td class="muted">${esc(s.reason || s.detail || "")}</td></tr>`).join("");
    main.innerHTML = `<h2>${esc(d.device)} ${stateSpan(onlineText(d.online), d.device)}
      <span class="muted">last seen ${ago(d.last_seen)}</span></h2>
      <p>model ${modelText(d.model)} · update ${updateText(d.update)} · fps ${num(d.fps)} · latency p50/p95
      ${num(d.latency_ms && d.latency_ms.p50)} / ${num(d.latency_ms && d.latency_ms.p95)} ms · stored
      ${esc((d.stored || {}).results || 0)} results, ${esc((d.stored || {}).events || 0)} events, lost ${esc((d.stored || {}).lost || 0)}</p>
      <section><h2>Snapshots</h2><div class="grid" id="snapshots">${snaps || '<span class="muted">none yet</span>'}</div></section>
      <section><h2>Latency and fps (telemetry)</h2><div class="grid">${chart(d.series || [], "p50", "#1976d2", "latency p50 ms")}
      ${chart(d.series || [], "p95", "#c62828", "latency p95 ms")}${chart(d.series || [], "fps", "#1a7f37", "fps")}</div></section>
      <section><h2>Recent events</h2><table id="events"><thead><tr><th>when</th><th>type</th><th>source</th><th>label</th>
      <th>track</th><th>zones</th><th>score</th><th>snapshot</th></tr></thead><tbody>${events ||
      '<tr><td colspan="8" class="muted">none</td></tr>'}</tbody></table></section>
      <section><h2>Recent results</h2><table id="results"><thead><tr><th>when</th><th>seq</th><th>input</th><th>result</th>
      <th>ms</th></tr></thead><tbody>${results || '<tr><td colspan="5" class="muted">none</td></tr>'}</tbody></table></section>
      <section><h2>Sources</h2><table><tbody>${sources || '<tr><td class="muted">none reported</td></tr>'}</tbody></table></section>
      <section><h2>Model history</h2><table id="models"><tbody>${models || '<tr><td class="muted">none</td></tr>'}</tbody></table></section>
      <section><h2>Last command replies</h2><table id="replies"><tbody>${replies ||
      '<tr><td class="muted">none since this dashboard started</td></tr>'}</tbody></table></section>`;
  }
  function summary(r) {
    if (r.error) return "error: " + r.error;
    if (r.classes && r.classes.length) return r.classes[0].label + " " + num(r.classes[0].score, 2);
    const objects = r.objects || r.detections;
    if (objects) return objects.length + " object(s)" +
      (objects.length ? ": " + objects.map((x) => x.label).slice(0, 4).join(", ") : "");
    if (r.segments) return r.segments.length + " segment(s)";
    return "";
  }
  async function showDevice(id) {
    try { renderDevice(await getJSON("/api/devices/" + encodeURIComponent(id))); }
    catch (err) { main.innerHTML = `<p class="state offline">${esc(err.message)}</p>`; }
  }

  // ------------------------------------------------------------------ rollout page
  async function showRollout() {
    let doc;
    try { doc = await getJSON("/api/rollout"); } catch (err) { main.innerHTML = `<p>${esc(err.message)}</p>`; return; }
    const parts = doc.rollouts.map((r) => `<section class="rollout"><h2>${esc(r.name)} v${esc(r.version)}
      <span class="stage">${esc(r.stage)}</span> <span class="muted">${esc(r.offered)} offered, ${esc(r.active)} active,
      ${esc(r.failed)} failed</span></h2><table><thead><tr><th>device</th><th>online</th><th>state</th><th>progress</th>
      <th>shadow</th><th>reason</th></tr></thead><tbody>${r.devices.map((d) => `<tr data-device="${esc(d.device)}"><td>${esc(d.device)}</td>
      <td>${stateSpan(onlineText(d.online))}</td><td>${stateSpan(d.state)}</td><td>${bar(d.progress)}</td>
      <td class="muted">${shadowText(d.shadow)}</td><td class="muted">${esc(d.reason)}</td></tr>`).join("")}</tbody></table></section>`).join("");
    main.innerHTML = parts || '<p class="muted">no rollout: no device has been offered a model</p>';
  }

  // ------------------------------------------------------------------ routing and live updates
  function route() {
    clearTimeout(deviceTimer);
    pending = false;  // a refresh cleared here must not block the next one
    const hash = location.hash || "#/";
    if (hash.startsWith("#/device/")) return showDevice(decodeURIComponent(hash.slice(9)));
    if (hash === "#/rollout") return showRollout();
    renderFleet();
  }
  function onFleet(doc) {
    fleet = doc;
    const hash = location.hash || "#/";
    if (hash === "#/") return renderFleet();
    if (pending) return;  // the device and rollout pages fetch their own document, at most every 500 ms
    pending = true;
    deviceTimer = setTimeout(() => { pending = false; route(); }, 500);
  }
  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource(url("/api/events"));
    source.addEventListener("fleet", (e) => onFleet(JSON.parse(e.data)));
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  }
  window.addEventListener("hashchange", route);
  getJSON("/api/fleet").then((doc) => { fleet = doc; route(); }).catch((err) => {
    main.innerHTML = `<p class="state offline">${esc(err.message)}</p>`;
  });
  connect();
})();
