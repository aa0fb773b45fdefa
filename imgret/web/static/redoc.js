// ReDoc for the API schema, from the files the package serves (no outside host).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  Redoc.init("/openapi.json", { hideDownloadButton: false }, document.getElementById("redoc"));
});
