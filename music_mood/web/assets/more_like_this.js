// A result's "More like this" button puts its file_path into the hidden #like box and presses the hidden
// #more-like-this button, so the page asks /more_like_this as an API client would.
element.addEventListener('click', (event) => {
  const button = event.target.closest('button.more-like');
  if (!button) return;
  const box = document.querySelector('#like textarea');
  box.value = button.dataset.file;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  document.querySelector('#more-like-this').click();
});
