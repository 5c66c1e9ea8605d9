// Starts ReDoc on /redoc (a static file: the Content-Security-Policy allows no inline
// script). The page names the OpenAPI document in data-openapi-url.
(function () {
  "use strict";
  var root = document.getElementById("redoc");
  window.Redoc.init(root.dataset.openapiUrl, {}, root);
})();
