// Visitor and touch ids, and the base64url codec (RFC 4648 section 5, no padding) they share
// with the cookie and the link token.

/**
 * Base64url without padding of `bytes`.
 *
 * @param {Uint8Array} bytes
 */
export const base64url = (bytes) => btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").split("=")[0];

/**
 * Base64url of the UTF-8 bytes of `text` (Encoding standard).
 *
 * @param {string} text
 */
export const encodeText = (text) => base64url(new TextEncoder().encode(text));

/**
 * The text whose UTF-8 bytes `value` holds in base64url (padded or not). Throws on garbage.
 *
 * @param {string} value
 */
export const decodeText = (value) =>
  new TextDecoder().decode(Uint8Array.from(atob(value.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt()));

/**
 * A new id: 22 base64url characters from 16 random bytes (128 bits), as the collector's
 * ^[A-Za-z0-9_-]{1,64}$ wants. Throws where crypto.getRandomValues is missing (every browser of
 * the build's ES2020 target has it, in insecure contexts too): an id claims stored touches, so it
 * is never made from a guessable source, and no touch is made there instead.
 */
export const newId = () => base64url(crypto.getRandomValues(new Uint8Array(16)));
