// Swagger UI on /openapi.json. For a signed-in admin, every request it sends is signed first:
// the server makes the x-shardcast-signature (POST /admin/sign.json) from the method, the
// path and query, and the body about to be sent.
const note = document.getElementById('signing');

async function signature(method, target, body) {
  const response = await fetch('/admin/sign.json', {
    method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({method, target, body}),
  });
  return response.ok ? response.json() : null;
}

async function signRequest(request) {
  const url = new URL(request.url, window.location.href);
  if (url.origin !== window.location.origin || url.pathname === '/openapi.json') return request;
  const body = typeof request.body === 'string' ? request.body : '';
  const signed = await signature(request.method, url.pathname + url.search, body);
  if (signed) request.headers[signed.header] = signed.value;
  return request;
}

const probe = await signature('GET', '/info', '');
note.textContent = probe ? 'Signed in as admin: "Try it out" requests are signed for you'
  : 'Sign in to the admin panel to have requests signed, or use "Authorize"';
note.classList.toggle('signed', Boolean(probe));

window.ui = window.SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger',
  deepLinking: true,
  tryItOutEnabled: true,
  requestInterceptor: signRequest,
});
