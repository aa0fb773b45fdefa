// The duplicates page: groups of near-duplicate images, biggest first; the threshold and the
// page are in the address.
"use strict";

(() => {
  const { api, el, card, pager, status, loadInfo, empty } = imgret;
  const $ = (id) => document.getElementById(id);
  const LIMIT = 30;

  async function show(threshold, offset) {
    status("looking for near-duplicates…");
    try {
      const page = await api(`/api/duplicates?threshold=${threshold}&offset=${offset}&limit=${LIMIT}`);
      if (!page.total) {
        empty($("groups"), `No two images are ${threshold} or more similar.`);
      } else {
        $("groups").replaceChildren(...page.groups.map((group, i) => el(
          "section", { class: "strip group" },
          el("h3", {}, `Group ${offset + i + 1}`, el("span", { class: "size" }, ` · ${group.length} images`)),
          el("div", { class: "strip-images" }, ...group.map((item) => card(item))),
        )));
      }
      pager($("pager"), page.total, page.offset, LIMIT, (o) => go(threshold, o));
      status(`${page.total.toLocaleString()} group${page.total === 1 ? "" : "s"} of near-duplicates (${page.pairs.toLocaleString()} pairs) at similarity ≥ ${threshold}`);
    } catch (err) {
      status(err.message, true);
    }
  }

  function go(threshold, offset) {
    history.replaceState(null, "", `?threshold=${threshold}&offset=${offset}`);
    show(threshold, offset);
  }

  function threshold() {
    let t = parseFloat($("threshold").value);
    t = Number.isFinite(t) ? Math.min(Math.max(t, 0.5), 1) : 0.95;
    $("threshold").value = String(t);
    return t;
  }

  const params = new URLSearchParams(location.search);
  if (params.get("threshold")) $("threshold").value = params.get("threshold");
  $("dup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    go(threshold(), 0);
  });
  loadInfo().catch((err) => status(err.message, true));
  show(threshold(), Math.max(0, parseInt(params.get("offset"), 10) || 0));
})();
