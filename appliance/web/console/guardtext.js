// Plain words for what the guards and the server say: a blocked question names the kind of
// content and what to do instead of showing a JSON error.

// Llama Guard 3's hazard categories, which the content-safety guard reports.
export const SAFETY_CATEGORIES = {
  S1: 'violent crimes',
  S2: 'non-violent crimes',
  S3: 'sex-related crimes',
  S4: 'child sexual exploitation',
  S5: 'defamation',
  S6: 'specialised (medical, legal or financial) advice',
  S7: 'private information about a person',
  S8: 'intellectual property',
  S9: 'indiscriminate weapons',
  S10: 'hate',
  S11: 'suicide and self-harm',
  S12: 'sexual content',
  S13: 'elections',
  S14: 'misuse of code tools',
};

const PERSONAL = {
  email: 'an e-mail address',
  phone: 'a phone number',
  card: 'a payment card number',
  ssn: 'a social security number',
  iban: 'a bank account number (IBAN)',
  ip: 'an IP address',
  dob: 'a date of birth',
  record: 'a medical record number',
  mrn: 'a medical record number',
};

const ADVICE = {
  S11: 'If you or someone else may be in danger, call your local emergency number or a '
    + 'crisis line now. You can rephrase the question if it was about something else.',
  injection: 'Ask your question directly, without instructions to the assistant about its '
    + 'rules or role.',
  secret: 'Remove the password, key or token from your message and send it again. Never '
    + 'share secrets in a chat.',
  personal: 'Remove the personal data from your message and send it again.',
  failure: 'Wait a moment and send the message again. If this keeps happening, tell your '
    + 'IT administrator.',
  default: 'Rephrase your question. If you think this was a mistake, tell your IT '
    + 'administrator (the event is recorded without your text).',
};

// The kind of content a guard verdict names, in plain words, and the advice that goes with it.
export function describeGuard(guard, category) {
  const code = category || '';
  if (SAFETY_CATEGORIES[code]) {
    return { kind: SAFETY_CATEGORIES[code], advice: ADVICE[code] || ADVICE.default };
  }
  if (code === 'injection' || guard === 'prompt-injection') {
    return { kind: 'an attempt to override the assistant’s instructions', advice: ADVICE.injection };
  }
  if (code === 'secret' || code.startsWith('secret')) {
    return { kind: 'a password, access key or other secret', advice: ADVICE.secret };
  }
  if (PERSONAL[code]) return { kind: `personal data (${PERSONAL[code]})`, advice: ADVICE.personal };
  if (code === 'timeout' || code === 'error') {
    return { kind: 'a safety check that could not finish', advice: ADVICE.failure };
  }
  if (guard === 'content-safety') return { kind: 'unsafe content', advice: ADVICE.default };
  return { kind: 'content this appliance’s policy does not allow', advice: ADVICE.default };
}

// A human title, text and advice for any error the API answers.
export function explainError(err) {
  if (err && err.name === 'AbortError') return { title: 'Stopped', text: '', advice: '' };
  if (!err || err.status === undefined) {
    return { title: 'The appliance could not be reached', text: String(err && err.message || err),
      advice: 'Check that the appliance is running and try again.' };
  }
  if (err.code === 'content_filter') {
    const { kind, advice } = describeGuard(err.guard, err.category);
    return { title: 'This question was not sent to the assistant',
      text: `It looks like it contains ${kind}.`, advice, blocked: true };
  }
  const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : ' Try again shortly.';
  switch (err.status) {
    case 401:
      return { title: 'Your key was not accepted', signIn: true,
        text: 'It may have been revoked or may have expired.', advice: 'Sign in again with a valid key.' };
    case 403:
      return { title: 'This key may not do that', text: err.message,
        advice: 'Ask your IT administrator for a key with the right permissions.' };
    case 429:
      return { title: 'Too many requests for this key', text: '', advice: wait.trim() };
    case 503:
      return { title: 'The appliance is busy or still starting', text: err.message, advice: wait.trim() };
    default:
      break;
  }
  if (err.code === 'context_length_exceeded') {
    return { title: 'The conversation is too long for the model', text: '',
      advice: 'Start a new conversation, or lower “Max tokens”.' };
  }
  return { title: `The request failed (${err.status})`, text: err.message, advice: '' };
}
