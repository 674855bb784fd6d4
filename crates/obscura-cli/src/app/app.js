// The page of `obscura serve`. It holds no secret of its own: the launch token comes in the
// address's fragment (never sent to a server), is kept in this tab's sessionStorage (this
// origin's only: scheme, host and port) and goes with every API call as a bearer token.
// Everything shown is set as text, never as HTML.
"use strict";

const token = (() => {
  const m = location.hash.match(/token=([0-9a-f]{64})/);
  if (m) {
    sessionStorage.setItem("obscura-token", m[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("obscura-token");
})();

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

// A call to the API; resolves to the answer's JSON (or blob), rejects with the server's error.
async function api(path, options = {}, as = "json") {
  const headers = Object.assign({}, options.headers, { Authorization: `Bearer ${token}` });
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (!r.ok) {
    let why = `${r.status} ${r.statusText}`;
    try { why = (await r.json()).error || why; } catch (_) { /* not JSON */ }
    const e = new Error(why);
    e.status = r.status;
    throw e;
  }
  return as === "blob" ? r.blob() : r.json();
}

function show(page) {
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== `page-${page}`;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.page === page);
  if (page === "cluster") cluster();
  if (page === "account") secrets();
}

// ---- Account ----

let current = { user: null, owner: false };

async function whoami() {
  try {
    current = await api("/api/session");
    $("whoami").textContent = current.user ? `${current.user}${current.owner ? " (data owner)" : ""}` : "not logged in";
    $("login-form").hidden = !!current.user;
    $("logout").hidden = !current.user;
    $("password-form").hidden = !current.user;
  } catch (e) {
    $("whoami").textContent = "no access";
    notice(e.message);
  }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("account-status").textContent = "logging in…";
  try {
    const r = await api("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }),
    });
    $("password").value = "";
    $("account-status").textContent =
      `logged in as ${r.user} at keepers ${r.keepers.join(", ")} until ${r.expires_local}` +
      (r.warnings.length ? `; ${r.warnings.join("; ")}` : "");
  } catch (e) {
    $("account-status").textContent = `login failed: ${e.message}`;
  }
  await whoami();
  secrets();
});

$("logout").addEventListener("click", async () => {
  try {
    const r = await api("/api/logout", { method: "POST" });
    $("account-status").textContent = r.user ? `logged out ${r.user}` : "not logged in";
  } catch (e) {
    $("account-status").textContent = `logout failed: ${e.message}`;
  }
  await whoami();
  secrets();
});

$("password-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await api("/api/password", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: current.user, current: $("current-password").value, new: $("new-password").value }),
    });
    $("account-status").textContent = `keepers ${r.changed.join(", ")} took the new password` +
      (r.left.length ? `; still the old one: ${r.left.join("; ")}` : "");
  } catch (e) {
    $("account-status").textContent = `password not changed: ${e.message}`;
  }
  $("current-password").value = "";
  $("new-password").value = "";
});

async function secrets() {
  const body = $("secrets").tBodies[0];
  body.replaceChildren();
  if (!current.user) return;
  try {
    const list = await api("/api/secrets");
    if (!list.length) body.append(row(["no secrets"]));
    for (const s of list) body.append(row([s.name, s.kind, s.id, s.created || ""]));
  } catch (e) {
    body.append(row([`secrets not read: ${e.message}`]));
  }
}

function row(cells, classes = []) {
  const tr = el("tr");
  cells.forEach((c, i) => tr.append(el("td", classes[i] || "", c)));
  return tr;
}

// ---- Search ----

async function search(file) {
  const status = $("search-status");
  const results = $("results");
  results.replaceChildren();
  status.textContent = `searching for ${file.name}…`;
  const q = new URLSearchParams({
    top: $("top").value,
    max_distance: $("max-distance").value,
    exhaustive: $("exhaustive").checked,
  });
  try {
    const r = await api(`/api/search?${q}`, { method: "POST", body: file });
    status.textContent = `${r.results.length} match${r.results.length === 1 ? "" : "es"} ` +
      `for ${file.name} (${r.candidates} candidate${r.candidates === 1 ? "" : "s"}, ${r.total_ms.toFixed(0)} ms)` +
      (r.warnings.length ? `; ${r.warnings.join("; ")}` : "");
    for (const m of r.results) results.append(match(m));
  } catch (e) {
    status.textContent = `search failed: ${e.message}`;
  }
}

function match(m) {
  const li = el("li", "match");
  li.dataset.id = m.id;
  const picture = el("div", "none", "rebuilding…");
  li.append(picture);
  li.append(el("div", "distance", `distance ${m.distance}`));
  if (m.label) li.append(el("div", "label", m.label));
  if (m.file) li.append(el("div", "file", m.file));
  li.append(el("div", "id", m.id));
  api(`/api/images/${m.id}?thumbnail=320`, {}, "blob").then((blob) => {
    const img = el("img", "thumb");
    img.alt = m.file || m.id;
    img.src = URL.createObjectURL(blob);
    img.addEventListener("click", () => open(m));
    picture.replaceWith(img);
  }, (e) => {
    picture.textContent = e.status === 403 ? "not yours to fetch" : `not rebuilt: ${e.message}`;
  });
  return li;
}

async function open(m) {
  $("viewer-caption").textContent = `${m.file || m.id}, distance ${m.distance}`;
  $("viewer-image").removeAttribute("src");
  $("viewer").showModal();
  try {
    const blob = await api(`/api/images/${m.id}`, {}, "blob");
    $("viewer-image").src = URL.createObjectURL(blob);
  } catch (e) {
    $("viewer-caption").textContent = `not rebuilt: ${e.message}`;
  }
}

$("query").addEventListener("change", () => {
  if ($("query").files.length) search($("query").files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  if (ev.dataTransfer.files.length) search(ev.dataTransfer.files[0]);
});

// ---- Index ----

async function indexFiles(files) {
  const body = $("index-files").tBodies[0];
  body.replaceChildren();
  const progress = $("index-progress");
  progress.hidden = false;
  progress.max = files.length;
  progress.value = 0;
  let indexed = 0, skipped = 0;
  const rows = files.map((f) => {
    const tr = row([f.webkitRelativePath || f.name, "waiting", ""]);
    body.append(tr);
    return tr;
  });
  for (const [i, f] of files.entries()) {
    const cells = rows[i].cells;
    cells[1].textContent = "indexing…";
    try {
      const r = await api(`/api/index?${new URLSearchParams({ name: f.webkitRelativePath || f.name })}`,
        { method: "POST", body: f });
      if (r.id) {
        indexed++;
        cells[1].textContent = "indexed";
        cells[1].className = "ok";
        cells[2].textContent = r.id + (r.ledger ? "" : " (not in the ledger)") +
          (r.warnings.length ? `: ${r.warnings.join("; ")}` : "") +
          (r.recovered.length ? `; also indexed by an interrupted run: ${r.recovered.join(", ")}` : "");
      } else {
        skipped++;
        cells[1].textContent = "skipped";
        cells[1].className = "bad";
        cells[2].textContent = r.skipped;
      }
    } catch (e) {
      skipped++;
      cells[1].textContent = "skipped";
      cells[1].className = "bad";
      cells[2].textContent = e.message;
    }
    progress.value = i + 1;
    $("index-summary").textContent = `${indexed} indexed, ${skipped} skipped, ${files.length - i - 1} to go`;
  }
  $("index-summary").textContent = `${indexed} indexed, ${skipped} skipped`;
}

for (const id of ["files", "folder"]) {
  $(id).addEventListener("change", () => {
    const files = Array.from($(id).files).filter((f) => !f.name.startsWith("."));
    if (files.length) indexFiles(files);
  });
}

// ---- Cluster ----

async function cluster() {
  const body = $("servers").tBodies[0];
  body.replaceChildren();
  $("cluster-summary").textContent = "asking every server…";
  try {
    const r = await api("/api/cluster");
    const s = r.status;
    const audit = new Map((r.audit || []).map((a) => [a.node, a]));
    const appraisal = new Map((s.attestation.servers || []).map((a) => [a.server, a]));
    const state = (x) => (x.ok ? "up" : `down: ${x.error}`);
    const attested = (name) => {
      const a = appraisal.get(name);
      if (!a) return s.attestation.policy ? "not appraised" : "no policy";
      return a.ok ? "attested" : `refused: ${a.error}`;
    };
    for (const n of s.nodes) {
      const a = audit.get(n.node);
      const auditText = a ? (a.ok ? `${a.entries} entries verified` : `FAILED: ${a.error}`) : "";
      body.append(row([`node ${n.node}`, state(n), (n.key_versions || []).join(", "), n.images ?? "",
        n.pending ?? "", auditText, attested(`node ${n.node}`)],
        ["", n.ok ? "ok" : "bad", "", "", "", a && !a.ok ? "bad" : "", ""]));
    }
    for (const k of s.keepers) {
      body.append(row([`keeper ${k.keeper}`, state(k), (k.key_versions || []).join(", "), "", "",
        k.ok ? `${k.audit_entries} entries` : "", attested(`keeper ${k.keeper}`)],
        ["", k.ok ? "ok" : "bad"]));
    }
    $("cluster-summary").textContent = (s.ok ? "every server is well" : "something needs attention") +
      `; this client uses key version ${s.key_version}` + (r.audit_error ? `; audit not checked: ${r.audit_error}` : "") +
      (s.logged_in ? "" : "; log in to see images and audit logs");
    $("cluster-summary").className = s.ok ? "ok" : "bad";
    const errors = $("errors").tBodies[0];
    errors.replaceChildren();
    if (!r.errors.length) errors.append(row(["none since this app started", "", "", ""]));
    for (const e of r.errors) {
      errors.append(row([e.last_local, e.op, e.error, e.times > 1 ? `${e.times} times since ${e.first_local}` : ""],
        ["", "", "bad", ""]));
    }
  } catch (e) {
    $("cluster-summary").textContent = `not read: ${e.message}`;
  }
}

$("refresh").addEventListener("click", cluster);

// ---- Start ----

for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => show(t.dataset.page));
if (!token) {
  notice("This page needs the address `obscura serve` printed (it ends with #token=…).");
} else {
  whoami().then(() => show(current.user ? "search" : "account"));
}
