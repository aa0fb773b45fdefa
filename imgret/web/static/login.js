// The login page: where to go after it, and what went wrong before.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "/";
  document.getElementById("next").value = next.startsWith("/") && !next.startsWith("//") ? next : "/";
  if (params.get("failed")) document.getElementById("status").textContent = "That is not the token of this server.";
  document.getElementById("token").focus();
})();
