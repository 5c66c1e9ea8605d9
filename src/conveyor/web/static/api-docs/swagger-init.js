// Starts Swagger UI on /docs (a static file: the Content-Security-Policy allows no inline
// script). The page names the OpenAPI document in data-openapi-url.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // No call to validator.swagger.io: the page works offline and talks only to Conveyor.
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
  });
})();
