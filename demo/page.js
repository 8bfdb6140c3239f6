// The page's own script (demo/page.py's script() fills in __CUDA_REASON__): it marks an answer stale when the
// form moves on after it was asked for, disables CUDA where it cannot run, selects the model picker's text on
// focus and scrolls a new answer below the fold into view.
() => {
  const cudaReason = __CUDA_REASON__;
  const value = (id) => {
    const box = document.getElementById(id);
    const el = box && box.querySelector('input, textarea');
    return el ? el.value : null;
  };
  const checked = (id) => document.querySelector(`#${id} input:checked`)?.value;
  const same = (got, want) => {
    if (got === null) return true;
    if (want === null) return got.trim() === '';
    if (typeof want === 'number') {
      const v = parseFloat(got);
      return Math.abs(v - want) <= 1e-9 * Math.max(1, Math.abs(want));
    }
    return got === want;
  };
  // Whether the form still holds what an answer was asked for (data-for, written by demo/views.py).
  const current = (key) => {
    if (key.model && value('model-picker') !== key.model) return false;
    if (key.format && checked('format-picker') !== key.format) return false;
    if (key.device && checked('device-picker') !== key.device) return false;
    return Object.entries(key.fields || {}).every(([id, want]) => same(value(id), want));
  };
  const note = '<p class="stale-note late">Stale: the form changed after this answer was asked for. '
    + 'Press Predict for the new input.</p>';
  // An answer that came back after the form moved on (or whose picture was drawn on since) is marked stale.
  const check = () => {
    const answer = document.querySelector('#prediction [data-for]');
    if (!answer || answer.closest('.stale-body')) return;
    const late = answer.dataset.stroked === '1' || !current(JSON.parse(answer.dataset.for));
    const marked = answer.previousElementSibling?.classList.contains('late');
    if (late && !marked) {
      answer.insertAdjacentHTML('beforebegin', note);
      answer.classList.add('late-body');
    } else if (!late && marked) {
      answer.previousElementSibling.remove();
      answer.classList.remove('late-body');
    }
  };
  document.addEventListener('input', check, true);
  document.addEventListener('change', check, true);
  // A picture changed by a stroke on the canvas, an upload or a button of the editor (clear, undo, redo).
  const pictureChanged = (event) => {
    const editor = event.target.closest?.('.picture-input');
    if (!editor) return;
    const stroke = event.type === 'pointerdown' && event.target.tagName === 'CANVAS';
    const upload = event.type === 'change' && event.target.type === 'file';
    const button = event.type === 'click' && event.target.closest('button')
      && /clear|remove|undo|redo/i.test(event.target.closest('button').getAttribute('aria-label') || '');
    const answer = document.querySelector('#prediction [data-for]');
    if ((stroke || upload || button) && answer) { answer.dataset.stroked = '1'; check(); }
  };
  ['pointerdown', 'change', 'click'].forEach((type) => document.addEventListener(type, pictureChanged, true));
  // Typing in the focused model picker replaces the name shown there instead of appending to it.
  const selectName = (event) => {
    if (event.target.matches?.('#model-picker input')) setTimeout(() => event.target.select(), 0);
  };
  document.addEventListener('focusin', selectName, true);
  document.addEventListener('click', selectName, true);
  const disableCuda = () => {
    if (!cudaReason) return;
    document.querySelectorAll('#device-picker input[type="radio"]').forEach((input) => {
      if (input.value !== 'cuda' || input.disabled) return;
      input.disabled = true;
      const label = input.closest('label');
      if (label) { label.classList.add('unavailable'); label.title = cudaReason; }
    });
  };
  // A new answer below the fold (a phone, where the answer sits under the form) is scrolled into view.
  let seen = null;
  const reveal = () => {
    const answers = document.querySelectorAll('#prediction [data-for], #prediction .error');
    const answer = [...answers].find((a) => !a.closest('.stale-body'));
    if (!answer || answer === seen) return;
    seen = answer;
    const box = answer.getBoundingClientRect();
    if (box.top > window.innerHeight || box.bottom < 0) answer.scrollIntoView({ block: 'start' });
  };
  const watch = () => { disableCuda(); check(); reveal(); };
  watch();
  new MutationObserver(watch).observe(document.body, { childList: true, subtree: true });
}
