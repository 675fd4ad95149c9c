// Starts Swagger UI on /docs (app/api/docs.py): a file, not an inline script, so the
// page's Content-Security-Policy needs no 'unsafe-inline' for scripts.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    // Validation would send the document to a public validator service.
    validatorUrl: null,
  });
});
