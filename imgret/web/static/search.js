// The search page: a query (an uploaded image or a collection image) and its ranked results;
// below, the collection page by page to pick a query from.
"use strict";

(() => {
  const { api, el, card, pager, status, loadInfo } = imgret;
  const $ = (id) => document.getElementById(id);
  const BROWSE_LIMIT = 48;
  let query = null; // {kind: "upload", file, url} or {kind: "item", id}
  let running = 0; // only the answer of the latest search is shown

  function settings() {
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const k = Math.max(1, parseInt($("k").value, 10) || 12);
    return { mode, k };
  }

  function showQuery(src, caption) {
    $("query").hidden = false;
    $("query-img").src = src;
    $("query-caption").replaceChildren(...caption);
  }

  async function search() {
    if (!query) return;
    const { mode, k } = settings();
    const mine = ++running;
    status("searching…");
    try {
      let result;
      if (query.kind === "upload") {
        const form = new FormData();
        form.append("file", query.file, query.file.name);
        form.append("k", String(k));
        form.append("mode", mode);
        result = await api("/api/search", { method: "POST", body: form });
      } else {
        const params = new URLSearchParams({ k: String(k), mode });
        result = await api(`/api/search/${query.id}?${params}`);
        history.replaceState(null, "", imgret.searchUrl(query.id, k, mode));
      }
      if (mine === running) render(result);
    } catch (err) {
      if (mine === running) {
        status(err.message, true);
        $("results").hidden = true;
      }
    }
  }

  function render(result) {
    const { mode, k } = result;
    const where = result.cluster !== null ? ` in cluster ${result.cluster}` : "";
    status(`${result.hits.length} results (${mode} search${where}) in ${result.took_ms} ms`);
    const q = result.query;
    const caption = [el("span", { class: "name" }, q.name)];
    if (result.cluster !== null) {
      caption.push(" · ", el("a", { href: `/clusters/${result.cluster}` }, `cluster ${result.cluster}`));
    }
    if (q.item) {
      caption.push(" · ", el("a", { href: q.item.image, target: "_blank", rel: "noopener" }, "full image"));
      showQuery(q.item.thumb, caption);
    } else {
      showQuery(query.url, caption);
    }
    $("results-title").textContent = q.kind === "item" ? `More like ${q.name}` : `Most like ${q.name}`;
    $("hits").replaceChildren(...result.hits.map((hit) => card(hit, { k, mode })));
    $("results").hidden = false;
  }

  function useFile(file) {
    if (!file) return;
    if (query && query.url) URL.revokeObjectURL(query.url);
    query = { kind: "upload", file, url: URL.createObjectURL(file) };
    history.replaceState(null, "", "/");
    search();
  }

  async function browse(offset) {
    try {
      const page = await api(`/api/items?offset=${offset}&limit=${BROWSE_LIMIT}`);
      const { mode, k } = settings();
      $("browse-grid").replaceChildren(...page.items.map((item) => card(item, { k, mode })));
      pager($("browse-pager"), page.total, page.offset, BROWSE_LIMIT, browse);
    } catch (err) {
      status(err.message, true);
    }
  }

  async function start() {
    const params = new URLSearchParams(location.search);
    if (params.get("mode") === "cluster") document.querySelector('input[value="cluster"]').checked = true;
    if (params.get("k")) $("k").value = params.get("k");
    try {
      const info = await loadInfo();
      $("k").max = String(info.limits.max_k);
      if (!info.clustered) {
        const cluster = document.querySelector('input[value="cluster"]');
        cluster.disabled = true;
        cluster.parentElement.title = "the collection is not clustered (imgret cluster)";
        document.querySelector('input[value="exact"]').checked = true;
      }
    } catch (err) {
      status(err.message, true);
      return;
    }
    $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      useFile(e.dataTransfer.files[0]);
    });
    drop.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") $("file").click();
    });
    $("controls").addEventListener("change", search);
    $("controls").addEventListener("submit", (e) => {
      e.preventDefault();
      search();
    });
    if (params.get("id") !== null) {
      query = { kind: "item", id: parseInt(params.get("id"), 10) };
      search();
    }
    browse(0);
  }

  start();
})();
