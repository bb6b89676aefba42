// Visitor and touch ids, and the base64url codec they share with the cookie.

/**
 * Base64url (RFC 4648 section 5) without padding of a binary string (one byte per character).
 *
 * @param {string} binary
 */
export const base64url = (binary) =>
  btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/**
 * UTF-8 bytes of `text` as a binary string (its length is the byte count).
 *
 * @param {string} text well-formed (JSON.stringify output always is)
 */
export const utf8 = (text) => unescape(encodeURIComponent(text));

/**
 * A new id: 22 base64url characters from 16 random bytes (128 bits), as the collector's
 * ^[A-Za-z0-9_-]{1,64}$ wants. Falls back to Math.random where crypto.getRandomValues is missing.
 */
export function newId() {
  let bytes = new Uint8Array(16);
  try {
    crypto.getRandomValues(bytes);
  } catch {
    bytes = bytes.map(() => Math.random() * 256);
  }
  return base64url(String.fromCharCode(...bytes));
}
