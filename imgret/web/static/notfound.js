// The "not found" page: names the address that was asked for.
"use strict";

(() => {
  document.getElementById("what").textContent = `${location.pathname} is not a page of imgret.`;
  imgret.loadInfo().catch(() => {});
})();
