// One cluster's page: its images, most central first, page by page (the offset in the address).
"use strict";

(() => {
  const { api, card, pager, status, loadInfo, empty } = imgret;
  const $ = (id) => document.getElementById(id);
  const LIMIT = 60;
  const cluster = parseInt(location.pathname.split("/").pop(), 10);

  async function show(offset) {
    try {
      const page = await api(`/api/clusters/${cluster}?offset=${offset}&limit=${LIMIT}`);
      $("title").textContent = `Cluster ${cluster} · ${page.total.toLocaleString()} image${page.total === 1 ? "" : "s"}`;
      if (page.items.length) $("grid").replaceChildren(...page.items.map((item) => card(item, { mode: "cluster" })));
      else empty($("grid"), "No images in this cluster.");
      pager($("pager"), page.total, page.offset, LIMIT, (o) => {
        history.replaceState(null, "", `?offset=${o}`);
        show(o);
      });
      status("");
    } catch (err) {
      status(err.message, true);
    }
  }

  document.title = `imgret — cluster ${cluster}`;
  loadInfo().catch((err) => status(err.message, true));
  show(Math.max(0, parseInt(new URLSearchParams(location.search).get("offset"), 10) || 0));
})();
