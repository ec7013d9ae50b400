// The admin sign-in page: posts the form as JSON, and opens the panel once signed in.
const form = document.getElementById('login');
form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const response = await fetch('/admin/login', {
    method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({user: form.user.value, password: form.password.value}),
  });
  if (response.ok) {
    window.location.assign('/admin');
    return;
  }
  const answer = await response.json().catch(() => ({}));
  document.getElementById('error').textContent = answer.error || `Refused (${response.status})`;
});
