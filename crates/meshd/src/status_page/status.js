// Redraws the status page from /debug/status every two seconds. Every value may be
// tenant-written: cells are filled with text, never markup.
"use strict";

function rows(id, cells, empty) {
  const body = document.getElementById(id);
  body.replaceChildren();
  if (cells.length === 0) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.textContent = empty;
    cell.className = "none";
    cell.colSpan = 9;
  }
  for (const values of cells) {
    const row = body.insertRow();
    for (const value of values) {
      row.insertCell().textContent = String(value);
    }
  }
}

function counted(id, listed, what) {
  const shown = listed.first.length;
  document.getElementById(id).textContent = listed.count === shown
    ? `${listed.count} ${what}`
    : `${listed.count} ${what} (first ${shown} listed)`;
}

function draw(status) {
  const meshes = [];
  for (const [project, mesh] of Object.entries(status.projects || {})) {
    for (const [cluster, member] of Object.entries(mesh.memberships || {})) {
      const served = member.idle ? "idle (no proxy connected)" : member.served ? "yes" : "no";
      meshes.push([project, cluster, member.location, member.channel, served]);
    }
  }
  rows("meshes", meshes, "no fleet project");
  rows("clusters", Object.entries(status.clusters), "no proxy connected");
  const revisions = [];
  for (const [revision, versions] of Object.entries(status.revisions)) {
    for (const [version, count] of Object.entries(versions)) {
      revisions.push([revision, version, count]);
    }
  }
  rows("revisions", revisions, "no proxy connected");
  const rollouts = [];
  for (const [cluster, revisions] of Object.entries(status.rollouts || {})) {
    for (const [revision, r] of Object.entries(revisions)) {
      rollouts.push([
        cluster,
        revision,
        r.state || "not reconciled yet",
        r.proxyTargetBasisPoints === undefined ? "" : `${r.proxyTargetBasisPoints / 100}%`,
        r.proxyMetrics ? r.proxyMetrics.managed : "",
        r.proxyMetrics ? r.proxyMetrics.unmanaged : "",
        r.errorDetails ? `${r.errorDetails.code}: ${r.errorDetails.message}` : "",
      ]);
    }
  }
  rows("rollouts", rollouts, "no DataPlaneControl (no cluster, or none reconciled)");
  counted("out-of-sync-count", status.outOfSync, "waiting for an ACK");
  rows("out-of-sync", status.outOfSync.first.map(p => [p.proxy, p.revision, p.waiting.join(", ")]), "every proxy has what it was sent");
  counted("rejecting-count", status.rejecting, "rejections");
  rows("rejecting", status.rejecting.first.map(r => [r.proxy, r.type, r.message]), "no proxy rejected its config");
  const errors = document.getElementById("config-errors");
  errors.replaceChildren();
  for (const error of status.configErrors) {
    const item = document.createElement("li");
    item.textContent = error;
    item.className = "bad";
    errors.append(item);
  }
  if (status.configErrors.length === 0) {
    const item = document.createElement("li");
    item.textContent = "none";
    item.className = "none";
    errors.append(item);
  }
  const updated = document.getElementById("updated");
  updated.textContent = `${status.proxies} proxies connected; updated ${new Date().toLocaleTimeString()}`;
  updated.className = "none";
}

async function refresh() {
  try {
    const answer = await fetch("/debug/status", { cache: "no-store" });
    if (!answer.ok) throw new Error(`meshd answered ${answer.status}`);
    draw(await answer.json());
  } catch (error) {
    const updated = document.getElementById("updated");
    updated.textContent = `cannot reach meshd: ${error.message}`;
    updated.className = "bad";
  }
  setTimeout(refresh, 2000);
}

refresh();
