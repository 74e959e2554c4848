// A scene's "Next-best track" button puts its index into the hidden #next-scene box and presses the hidden
// #next-best button, so the page asks /next_best_track as an API client would.
element.addEventListener('click', (event) => {
  const button = event.target.closest('button.next-best');
  if (!button) return;
  const box = document.querySelector('#next-scene input');
  box.value = button.dataset.scene;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  document.querySelector('#next-best').click();
});
