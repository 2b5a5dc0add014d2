// Starts Swagger UI on goldtrail's docs page. It is a file of its own, not an inline script, so that
// the page runs under its Content-Security-Policy (scripts from this origin only).
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The default would send the OpenAPI document to validator.swagger.io.
    validatorUrl: null,
  });
})();
