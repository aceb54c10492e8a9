// Storage adapters: where the client keeps what must outlive the app
// (a purchase intent's Idempotency-Key). An adapter has async `get(key)`
// (undefined when absent), `set(key, value)` and `remove(key)`; values are
// plain JSON data.

/** In memory: Node, tests, or a page that accepts losing intents on restart. */
export function memoryStorage(map = new Map()) {
  return {
    async get(key) {
      const value = map.get(key);
      return value === undefined ? undefined : JSON.parse(value);
    },
    async set(key, value) {
      map.set(key, JSON.stringify(value));
    },
    async remove(key) {
      map.delete(key);
    },
  };
}

/**
 * The Mini Program's local storage (`wx.setStorageSync` and friends): kept
 * across restarts of the Mini Program, per WeChat user.
 */
export function wxStorage(wx) {
  return {
    async get(key) {
      const value = wx.getStorageSync(key);
      return value === '' || value === undefined || value === null ? undefined : value;
    },
    async set(key, value) {
      wx.setStorageSync(key, value);
    },
    async remove(key) {
      wx.removeStorageSync(key);
    },
  };
}
