// lookalike's page: plain JavaScript over the JSON API. Every stored string (filepaths,
// metadata) goes into the page as text (textContent), never as HTML.

const $ = (id) => document.getElementById(id);
const PAGE = 24;
const TURNS = { // CSS for showing the query as the stored picture is (orientations.py)
  identity: "", rot90: "rotate(-90deg)", rot180: "rotate(180deg)", rot270: "rotate(90deg)",
  mirror: "scaleX(-1)", mirror_rot90: "rotate(-90deg) scaleX(-1)",
  mirror_rot180: "rotate(180deg) scaleX(-1)", mirror_rot270: "rotate(90deg) scaleX(-1)",
};
let key = sessionStorage.getItem("lookalike-key") || "";
let query = null; // the File searched for
let offset = 0;
const thumbnails = new Map(); // filepath → object URL (or null: none stored)
let keepsThumbnails = false; // whether the service keeps thumbnails (/stats says)

function say(text, isError = true) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
  message.hidden = !text;
}

class Refused extends Error {}

async function api(path, { method = "GET", form = null, params = null } = {}) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(url, { method, body: form, headers });
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    throw new Refused(`the service answered ${response.status} without a JSON body`);
  }
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("key").focus();
    throw new Refused(key ? "that API key is wrong: enter it again" : "this service needs its API key");
  }
  if (answer.status !== "ok") throw new Refused((answer.error || []).join("; ") || `HTTP ${response.status}`);
  return answer.result;
}

async function thumbnail(filepath) {
  if (!keepsThumbnails) return null;
  if (!thumbnails.has(filepath)) {
    // one request per picture, shared by every view that shows it
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    thumbnails.set(filepath, fetch(`/thumbnail?${new URLSearchParams({ filepath })}`, { headers })
      .then(async (response) => (response.ok ? URL.createObjectURL(await response.blob()) : null))
      .catch(() => null));
  }
  return thumbnails.get(filepath);
}

function forget(filepath) {
  const url = thumbnails.get(filepath);
  thumbnails.delete(filepath);
  if (url) url.then((object) => object && URL.revokeObjectURL(object));
}

function picture(filepath, url) {
  if (!url) {
    const none = document.createElement("span");
    none.className = "no-preview";
    none.textContent = "no preview";
    return none;
  }
  const img = document.createElement("img");
  img.src = url;
  img.alt = filepath;
  return img;
}

// A card's picture: a placeholder at once, the thumbnail when it arrives (all at once).
function pictureSlot(filepath) {
  const slot = document.createElement("span");
  slot.className = "picture";
  slot.setAttribute("aria-busy", "true");
  const loaded = thumbnail(filepath).then((url) => {
    slot.replaceChildren(picture(filepath, url));
    slot.removeAttribute("aria-busy");
    return url;
  });
  return [slot, loaded];
}

function nameOf(filepath) {
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = filepath; // as text: a stored name is never markup
  return name;
}

function facts(list, pairs) {
  list.replaceChildren();
  for (const [name, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    list.append(term, detail);
  }
}

function size(match) {
  const parts = [];
  if (match.width && match.height) parts.push(`${match.width}×${match.height}`);
  if (match.bytes) parts.push(`${(match.bytes / 1024).toFixed(0)} KB`);
  return parts.join(", ");
}

// -- views ---------------------------------------------------------------------------

function show(view) {
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== view;
  say("");
  if (view === "collection") loadPage().catch((error) => say(error.message));
  if (view === "status") loadStatus().catch((error) => say(error.message));
}

// -- search --------------------------------------------------------------------------

function choose(file) {
  if (!file) return;
  query = file;
  const preview = $("search-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("search-url").value = "";
}

async function search(event) {
  event.preventDefault();
  const form = new FormData();
  const url = $("search-url").value.trim();
  if (url) form.append("url", url);
  else if (query) form.append("image", query);
  else return say("choose a picture, or give its URL");
  form.append("all_orientations", $("search-orientations").checked ? "true" : "false");
  form.append("method", $("search-method").value);
  for (const [name, id] of [["min_score", "search-min-score"], ["limit", "search-limit"], ["filter", "search-filter"]]) {
    const value = $(id).value.trim();
    if (value) form.append(name, value);
  }
  say("");
  $("search-summary").textContent = "Searching…";
  try {
    const matches = await api("/search", { method: "POST", form });
    $("search-summary").textContent = matches.length ? `${matches.length} found, best first` : "Nothing like it is stored.";
    await showResults(matches, url || null);
  } catch (error) {
    $("search-summary").textContent = "";
    say(error.message);
  }
}

async function showResults(matches, queryUrl) {
  const list = $("results");
  list.replaceChildren();
  const pending = [];
  for (const match of matches) {
    const item = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "card";
    const [slot, loaded] = pictureSlot(match.filepath);
    pending.push(loaded);
    const name = nameOf(match.filepath);
    const details = document.createElement("dl");
    facts(details, [["score", match.score.toFixed(1)], ["distance", match.distance.toFixed(3)],
      ["orientation", match.orientation], ["method", match.method], ["verified", verdict(match)],
      ["size", size(match)], ["metadata", match.metadata]]);
    open.append(slot, name, details);
    open.addEventListener("click", async () => sideBySide(match, await loaded, queryUrl));
    item.append(open);
    list.append(item);
  }
  await Promise.all(pending);
}

function verdict(match) { // local features checked it (absent: not checked)
  if (match.verified === undefined || match.verified === null) return null;
  return match.verified ? "yes: the same scene" : "no";
}

function sideBySide(match, storedUrl, queryUrl) {
  const shown = $("side-query");
  shown.src = queryUrl || $("search-preview").src;
  // the frame turns, so that the query's region (on the query as sent) turns with it
  $("side-query-frame").style.transform = TURNS[match.orientation] || "";
  const region = match.region || null;
  for (const [id, box] of [["side-query-region", region && region.query], ["side-stored-region", region && region.stored]]) {
    const drawn = $(id);
    drawn.hidden = !box;
    if (box) {
      const [x0, y0, x1, y1] = box.map((value) => value * 100);
      Object.assign(drawn.style, { left: `${x0}%`, top: `${y0}%`, width: `${x1 - x0}%`, height: `${y1 - y0}%` });
    }
  }
  const stored = $("side-stored");
  stored.hidden = !storedUrl;
  if (storedUrl) stored.src = storedUrl;
  stored.alt = match.filepath;
  $("side-caption").textContent = match.filepath;
  facts($("side-facts"), [["score", match.score.toFixed(1)], ["orientation", match.orientation],
    ["method", match.method], ["verified", verdict(match)],
    ["overlap", region ? `${Math.round(region.overlap * 100)} % of the stored picture` : null],
    ["size", size(match)], ["metadata", match.metadata]]);
  $("side-by-side").showModal();
}

// -- compare -------------------------------------------------------------------------

async function compare(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("image1", $("compare-one").files[0]);
  form.append("image2", $("compare-two").files[0]);
  form.append("all_orientations", $("compare-orientations").checked ? "true" : "false");
  form.append("method", methods.includes("hybrid") ? "hybrid" : "signature");
  try {
    const [result] = await api("/compare", { method: "POST", form });
    const scores = result.scores || { [result.method]: result.score };
    facts($("comparison"), [["score", result.score.toFixed(1)], ["orientation", result.orientation],
      ...Object.entries(scores).map(([name, score]) => [`${name} score`, score.toFixed(1)])]);
  } catch (error) {
    say(error.message);
  }
}

// -- collection ----------------------------------------------------------------------

async function loadPage() {
  const [count] = await api("/count");
  if (offset >= count && offset > 0) offset = Math.max(0, Math.floor((count - 1) / PAGE) * PAGE);
  const names = await api("/list", { params: { offset, limit: PAGE } });
  $("collection-count").textContent = `${count} stored`;
  $("page-label").textContent = count ? `${offset + 1}–${offset + names.length} of ${count}` : "";
  $("page-previous").disabled = offset === 0;
  $("page-next").disabled = offset + PAGE >= count;
  const grid = $("collection-grid");
  grid.replaceChildren();
  const pending = [];
  for (const filepath of names) {
    const item = document.createElement("li");
    item.className = "card";
    const name = nameOf(filepath);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${filepath}`);
    remove.addEventListener("click", () => confirmDelete(filepath));
    const [slot, loaded] = pictureSlot(filepath);
    pending.push(loaded);
    item.append(slot, name, remove);
    grid.append(item);
  }
  await Promise.all(pending);
}

function confirmDelete(filepath) {
  const dialog = $("confirm-delete");
  $("confirm-name").textContent = filepath;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      await api("/delete", { method: "DELETE", params: { filepath } });
      forget(filepath);
      say(`deleted ${filepath}`, false);
      await loadPage();
    } catch (error) {
      say(error.message);
    }
  };
  dialog.showModal();
}

async function add(event) {
  event.preventDefault();
  const chosen = [...$("add-files").files, ...$("add-folder").files];
  const files = chosen.filter((file) => file.type.startsWith("image/"));
  if (!chosen.length) return say("choose pictures or a folder to add");
  const skipped = chosen.length - files.length;
  const metadata = $("add-metadata").value.trim();
  const progress = $("add-progress");
  const outcomes = $("add-outcomes");
  outcomes.replaceChildren();
  progress.max = files.length;
  progress.value = 0;
  progress.hidden = false;
  for (const file of files) {
    const form = new FormData();
    form.append("filepath", file.webkitRelativePath || file.name);
    form.append("image", file);
    if (metadata) form.append("metadata", metadata);
    const line = document.createElement("li");
    try {
      await api("/add", { method: "POST", form });
      line.textContent = `added ${file.webkitRelativePath || file.name}`;
      line.className = "ok";
    } catch (error) {
      line.textContent = `${file.name}: ${error.message}`;
      line.className = "error";
    }
    forget(file.webkitRelativePath || file.name);
    outcomes.append(line);
    progress.value += 1;
  }
  if (skipped) say(`${skipped} file(s) that are not pictures were left out`, false);
  $("add-form").reset();
  await loadPage().catch((error) => say(error.message));
}

// -- duplicates ----------------------------------------------------------------------

async function findDuplicates(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("keep", $("duplicates-keep").value);
  if ($("duplicates-min-score").value) form.append("min_score", $("duplicates-min-score").value);
  form.append("strict", String($("duplicates-strict").checked));
  const progress = $("duplicates-progress");
  progress.hidden = false;
  progress.removeAttribute("value"); // indeterminate until the job reports
  $("duplicates-summary").textContent = "looking for copies…";
  $("duplicates-groups").replaceChildren();
  try {
    const [{ job }] = await api("/duplicates", { method: "POST", form });
    let state;
    for (;;) {
      [state] = await api(`/jobs/${encodeURIComponent(job)}`, { params: { limit: 200 } });
      if (state.total) { progress.max = 1; progress.value = state.fraction; }
      if (state.state !== "running") break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (state.state !== "done") throw new Refused(`the search for duplicates ${state.state}: ${state.error || ""}`);
    const shown = state.results.length < state.count ? ` (the first ${state.results.length} shown)` : "";
    $("duplicates-summary").textContent = `${state.count} group(s) of copies${shown}` +
      (state.store_changed ? "; the collection changed meanwhile: search again to be sure" : "");
    await showGroups(state.results);
  } catch (error) {
    $("duplicates-summary").textContent = "";
    say(error.message);
  } finally {
    progress.hidden = true;
  }
}

async function showGroups(groups) {
  const list = $("duplicates-groups");
  const pending = [];
  for (const [index, group] of groups.entries()) {
    const item = document.createElement("li");
    item.className = "group";
    const title = document.createElement("h3");
    title.textContent = `Group ${index + 1}: ${group.members.length} pictures`;
    const grid = document.createElement("ol");
    grid.className = "grid";
    for (const [position, member] of group.members.entries()) {
      const card = document.createElement("li");
      card.className = position === 0 ? "card kept" : "card";
      const [slot, loaded] = pictureSlot(member.filepath);
      pending.push(loaded);
      const name = nameOf(member.filepath);
      const details = document.createElement("dl");
      facts(details, [
        ["keep", position === 0 ? "this copy" : undefined],
        ["score", position === 0 ? undefined : member.score.toFixed(1)],
        ["orientation", member.orientation === "identity" ? undefined : member.orientation],
        ["size", size(member)],
      ]);
      card.append(slot, name, details);
      if (position > 0) {
        const apart = document.createElement("button");
        apart.type = "button";
        apart.textContent = "Not a copy";
        apart.setAttribute("aria-label", `${member.filepath} is not a copy of ${group.keep}`);
        apart.addEventListener("click", () => markDistinct(group.keep, member.filepath, card));
        card.append(apart);
      }
      grid.append(card);
    }
    item.append(title, grid);
    list.append(item);
  }
  await Promise.all(pending);
}

async function markDistinct(first, second, card) {
  const form = new FormData();
  form.append("first", first);
  form.append("second", second);
  try {
    await api("/distinct", { method: "POST", form });
    card.remove();
    say(`${second} will not be grouped with ${first} again`, false);
  } catch (error) {
    say(error.message);
  }
}

// -- status --------------------------------------------------------------------------

let methods = ["signature"];

async function loadStatus() {
  const [stats] = await api("/stats");
  facts($("status-facts"), Object.entries(stats));
  return stats;
}

async function connect() {
  try {
    const stats = await loadStatus();
    methods = stats.methods || methods;
    keepsThumbnails = Boolean(stats.thumbnails);
    $("key-form").hidden = true;
  } catch (error) {
    say(error.message);
  }
  const select = $("search-method");
  select.replaceChildren(...methods.map((name) => new Option(name, name)));
}

for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => show(button.dataset.view));
}
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value;
  sessionStorage.setItem("lookalike-key", key);
  for (const filepath of [...thumbnails.keys()]) forget(filepath);
  say("");
  connect();
});
$("search-file").addEventListener("change", (event) => choose(event.target.files[0]));
const drop = $("search-drop");
drop.addEventListener("dragover", (event) => event.preventDefault());
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  choose(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) choose(file);
});
$("search-form").addEventListener("submit", search);
$("compare-form").addEventListener("submit", compare);
$("add-form").addEventListener("submit", add);
$("duplicates-form").addEventListener("submit", findDuplicates);
$("page-previous").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadPage().catch((e) => say(e.message)); });
$("page-next").addEventListener("click", () => { offset += PAGE; loadPage().catch((e) => say(e.message)); });
$("status-refresh").addEventListener("click", () => loadStatus().catch((e) => say(e.message)));
connect();
