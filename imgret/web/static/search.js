// The search page: a query (an uploaded, dropped or pasted image, or a collection image) and
// its ranked results; below, the collection page by page to pick a query from.
//
// The address keeps what Back needs: ?id=N (and k, mode, rerank, label, folder) for a search
// by a collection image, ?page=N for the browsing grid; a search by upload is kept in the
// history entry's state (the results and a small preview of the query).
"use strict";

(() => {
  const { api, el, card, pager, status, loadInfo, empty } = imgret;
  const $ = (id) => document.getElementById(id);
  // Images a browsing page shows: 48, or ?per=N (12 to 200).
  const PER = parseInt(new URLSearchParams(location.search).get("per"), 10);
  const BROWSE_LIMIT = Number.isFinite(PER) ? Math.min(Math.max(PER, 1), 200) : 48;
  let info = null;
  let query = null; // {kind: "upload", file, name, preview} or {kind: "item", id}
  let running = 0; // only the answer of the latest search is shown
  // Resolves to true once the collection's info and filters are loaded (false if that failed).
  // The listeners come first, so that an image chosen while the page loads is not lost: its
  // search waits for this.
  let ready = Promise.resolve(false);

  // The settings of the form, k brought into range (and the box showing what is used).
  function settings() {
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const max = info ? info.limits.max_k : 200;
    let k = parseInt($("k").value, 10);
    k = Number.isFinite(k) ? Math.min(Math.max(k, 1), max) : 12;
    if (String(k) !== $("k").value) $("k").value = String(k);
    const rerank = $("rerank").checked && mode !== "cluster";
    const [kind, ...rest] = $("filter").value.split(":");
    const value = rest.join(":");
    return {
      mode, k, rerank,
      label: kind === "label" ? value : null,
      folder: kind === "folder" ? value : null,
    };
  }

  function params(s) {
    const p = new URLSearchParams({ k: String(s.k), mode: s.mode });
    p.set("rerank", s.rerank ? "true" : "false"); // explicit: the server's default may be on
    if (s.label !== null) p.set("label", s.label);
    if (s.folder !== null) p.set("folder", s.folder);
    return p;
  }

  // The current address with some parameters replaced (null removes one).
  function address(changes) {
    const p = new URLSearchParams(location.search);
    for (const [name, value] of Object.entries(changes)) {
      if (value === null || value === undefined) p.delete(name);
      else p.set(name, String(value));
    }
    const s = p.toString();
    return s ? `/?${s}` : "/";
  }

  function showQuery(src, caption) {
    $("query").hidden = false;
    $("query-img").hidden = !src;
    if (src) $("query-img").src = src;
    $("query-caption").replaceChildren(...caption);
  }

  function clearQuery() {
    $("query").hidden = true;
    $("query-img").removeAttribute("src");
    $("results").hidden = true;
  }

  // A small JPEG data URL of an image file, to show again after Back (null if the browser
  // cannot draw it, e.g. TIFF).
  async function previewOf(file) {
    const url = URL.createObjectURL(file);
    try {
      const img = new Image();
      img.src = url;
      await img.decode();
      const scale = Math.min(1, 320 / Math.max(img.naturalWidth, img.naturalHeight));
      const canvas = el("canvas", {
        width: Math.max(1, Math.round(img.naturalWidth * scale)),
        height: Math.max(1, Math.round(img.naturalHeight * scale)),
      });
      canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
      return canvas.toDataURL("image/jpeg", 0.85);
    } catch (_) {
      return null;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  async function search({ push = false } = {}) {
    if (!query || !(await ready)) return;
    if (query.kind === "upload" && !query.file) {
      status("choose the image again to search it with other settings");
      return;
    }
    const s = settings();
    const mine = ++running;
    status("searching…");
    try {
      let result;
      if (query.kind === "upload") {
        const form = new FormData();
        form.append("file", query.file, query.name);
        for (const [name, value] of params(s)) form.append(name, value);
        result = await api("/api/search", { method: "POST", body: form });
        if (mine !== running) return;
        const state = { upload: { name: query.name, preview: query.preview, result } };
        const url = address({ id: null, q: "upload", ...Object.fromEntries(params(s)) });
        if (push) history.pushState(state, "", url);
        else history.replaceState(state, "", url);
      } else {
        result = await api(`/api/search/${query.id}?${params(s)}`);
        if (mine !== running) return;
        const url = address({ q: null, id: query.id, ...Object.fromEntries(params(s)),
          label: s.label, folder: s.folder });
        history.replaceState(null, "", url);
      }
      render(result);
    } catch (err) {
      if (mine !== running) return;
      if (query.kind === "upload" && push) {
        // The file was refused: say which, and show nothing of an earlier query.
        const name = query.name;
        status(err.message.startsWith(name) ? err.message : `${name}: ${err.message}`, true);
        query = null;
        clearQuery();
      } else {
        status(err.message, true); // earlier results stay
      }
    }
  }

  function render(result) {
    const { mode } = result;
    const where = result.cluster !== null ? ` in cluster ${result.cluster}` : "";
    const how = `${mode} search${result.rerank ? ", re-ranked" : ""}${where}`;
    status(`${result.hits.length} results (${how}) in ${result.took_ms} ms`);
    const q = result.query;
    const caption = [el("span", { class: "name" }, q.name)];
    if (result.cluster !== null) {
      caption.push(" · ", el("a", { href: `/clusters/${result.cluster}` }, `cluster ${result.cluster}`));
    }
    if (q.item) {
      caption.push(" · ", el("a", { href: q.item.image, target: "_blank", rel: "noopener" }, "full image"));
      showQuery(q.item.thumb, caption);
    } else {
      showQuery(query && query.preview, caption);
    }
    $("results-title").textContent = q.kind === "item" ? `More like ${q.name}` : `Most like ${q.name}`;
    const s = settings();
    if (result.hits.length) $("hits").replaceChildren(...result.hits.map((hit) => card(hit, s)));
    else empty($("hits"), "No results: nothing in the collection (or in the filter) to rank.");
    $("results").hidden = false;
  }

  async function useFile(file) {
    if (!file) return;
    const preview = await previewOf(file);
    query = { kind: "upload", file, name: file.name || "pasted image", preview };
    search({ push: true });
  }

  async function browse(offset) {
    const s = settings();
    const p = new URLSearchParams({ offset: String(offset), limit: String(BROWSE_LIMIT) });
    if (s.label !== null) p.set("label", s.label);
    if (s.folder !== null) p.set("folder", s.folder);
    try {
      const page = await api(`/api/items?${p}`);
      if (page.total === 0) {
        empty($("browse-grid"), s.label !== null || s.folder !== null
          ? "No images in this filter." : "No images yet.");
      } else {
        $("browse-grid").replaceChildren(...page.items.map((item) => card(item, s)));
      }
      pager($("browse-pager"), page.total, page.offset, BROWSE_LIMIT, (o) => {
        history.replaceState(history.state, "", address({ page: o / BROWSE_LIMIT + 1 }));
        browse(o);
      });
    } catch (err) {
      status(err.message, true);
    }
  }

  async function filters() {
    try {
      const facets = await api("/api/facets");
      const select = $("filter");
      const group = (title, kind, list) => list.length ? el("optgroup", { label: title },
        ...list.map((f) => el("option", { value: `${kind}:${f.name}` }, `${f.name} (${f.count.toLocaleString()})`))) : null;
      select.append(...[group("label", "label", facets.labels), group("folder", "folder", facets.folders)].filter(Boolean));
    } catch (err) {
      status(err.message, true);
    }
  }

  function restore(params) {
    const mode = params.get("mode");
    const radio = mode && document.querySelector(`input[name="mode"][value="${CSS.escape(mode)}"]`);
    if (radio && !radio.disabled) radio.checked = true;
    if (params.get("k")) $("k").value = params.get("k");
    // not in the address: the collection's default (on for a model built on a pretrained one)
    $("rerank").checked = params.has("rerank") ? params.get("rerank") === "true" : info.rerank_default;
    const wanted = params.get("label") !== null ? `label:${params.get("label")}`
      : params.get("folder") !== null ? `folder:${params.get("folder")}` : "";
    if ([...$("filter").options].some((o) => o.value === wanted)) $("filter").value = wanted;
  }

  function listen() {
    $("file").addEventListener("change", (e) => {
      useFile(e.target.files[0]);
      e.target.value = ""; // the same file again is a new search
    });
    const overlay = $("drop-overlay");
    let depth = 0;
    const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
    document.addEventListener("dragenter", (e) => {
      if (!hasFiles(e)) return;
      depth += 1;
      overlay.hidden = false;
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) overlay.hidden = true;
    });
    document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
    document.addEventListener("drop", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      overlay.hidden = true;
      useFile(e.dataTransfer.files[0]);
    });
    document.addEventListener("paste", (e) => {
      const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
      if (files.length) {
        e.preventDefault();
        useFile(files[0]);
      }
    });
    document.addEventListener("keydown", (e) => {
      const typing = e.target.closest && e.target.closest("input, select, textarea");
      if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey && $("lightbox")?.hidden !== false) {
        e.preventDefault();
        $("file").click();
      }
    });
    $("drop").addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") $("file").click();
    });
    $("controls").addEventListener("change", (e) => {
      $("rerank").disabled = settings().mode === "cluster";
      if (e.target.id === "filter") {
        history.replaceState(history.state, "", address({ page: null }));
        browse(0);
      }
      search();
    });
    $("controls").addEventListener("submit", (e) => {
      e.preventDefault();
      search();
    });
    window.addEventListener("popstate", () => location.reload());
  }

  // The collection's info, the filters and the settings of the address -> true, or false
  // (and the error shown) when the info cannot be loaded.
  async function setUp(params) {
    try {
      info = await loadInfo();
    } catch (err) {
      status(err.message, true);
      return false;
    }
    $("k").max = String(info.limits.max_k);
    if (!info.clustered) {
      const cluster = document.querySelector('input[value="cluster"]');
      cluster.disabled = true;
      cluster.parentElement.title = "the collection is not clustered (imgret cluster)";
    }
    await filters();
    restore(params);
    $("rerank").disabled = settings().mode === "cluster";
    return true;
  }

  async function start() {
    const params = new URLSearchParams(location.search);
    listen();
    ready = setUp(params);
    if (!(await ready)) return;
    const saved = history.state && history.state.upload;
    if (saved) {
      query = { kind: "upload", file: null, name: saved.name, preview: saved.preview };
      render(saved.result);
    } else if (params.get("id") !== null) {
      query = { kind: "item", id: parseInt(params.get("id"), 10) };
      search();
    }
    const page = Math.max(1, parseInt(params.get("page"), 10) || 1);
    browse((page - 1) * BROWSE_LIMIT);
  }

  start();
})();
