// Starts Swagger UI on the API description (the page's inline-free initialiser, so the docs
// work offline and under a CSP without inline script). Paths are relative: behind a proxy prefix too.
window.addEventListener('load', () => {
  window.ui = SwaggerUIBundle({
    url: new URL('openapi.json', document.baseURI).pathname,
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    persistAuthorization: false,
    // 270-odd operations (each under /api/v1 and its deprecated /api alias): the tags open on a
    // click, so the page is quick to draw
    docExpansion: 'none',
  });
});
