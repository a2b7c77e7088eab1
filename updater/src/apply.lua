-- The updater's apply step: KEYS, ARGV and the reply are described on
-- `APPLY_SCRIPT` in store.rs, next to this file.
local raw = redis.call('GET', KEYS[1])
local n = tonumber(ARGV[3])
local floor = tonumber(ARGV[6])
if not raw and floor >= 0 and tonumber(ARGV[7]) > floor then
  return {-1, {}, {}}
end
local stored = tonumber(raw or '-1')
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local h = tonumber(ARGV[4])
local m = tonumber(ARGV[5])
local nw = tonumber(ARGV[9])
local now = tonumber(ARGV[11])
local ebase = 16 + 2 * nw
local applied = 0
local last = stored
local touched = {}
local ranked = {}
local newest = nil
for e = 0, n - 1 do
  local b = ebase + e * 7
  local off = tonumber(ARGV[b])
  if off > stored then
    local ki = tonumber(ARGV[b + 1])
    local key = KEYS[1 + ki]
    local item = ARGV[b + 2]
    local kind = tonumber(ARGV[b + 3])
    local ts = tonumber(ARGV[b + 4])
    if nw > 0 then
      local w = tonumber(ARGV[12 + kind])
      if w > 0 then
        local rts = ts
        if rts > now then rts = now end
        table.insert(ranked, {item, w, rts})
        if newest == nil or rts > newest then newest = rts end
      end
    end
    local c = {0, 0, 0}
    local cur = redis.call('HGET', key, item)
    if cur then
      local v, a, t, cts = string.match(cur, '^(%d+),(%d+),(%d+),(-?%d+)$')
      if v then
        c = {tonumber(v), tonumber(a), tonumber(t)}
        if tonumber(cts) > ts then ts = tonumber(cts) end
      end
    end
    c[kind + 1] = c[kind + 1] + 1
    redis.call('HSET', key, item, string.format('%d,%d,%d,%.0f', c[1], c[2], c[3], ts))
    touched[ki] = true
    local ni = tonumber(ARGV[b + 5])
    if ni > 0 then
      redis.call('SADD', KEYS[1 + h + ni], ARGV[b + 6])
      if ttl > 0 then redis.call('EXPIRE', KEYS[1 + h + ni], ttl) end
    end
    applied = applied + 1
    if off > last then last = off end
  end
end
for ki, _ in pairs(touched) do
  local key = KEYS[1 + ki]
  local len = redis.call('HLEN', key)
  if len > cap then
    -- Least recently touched entries go first (ties: lower item id first).
    local all = redis.call('HGETALL', key)
    local entries = {}
    for i = 1, #all, 2 do
      local ts = string.match(all[i + 1], ',(-?%d+)$')
      table.insert(entries, {all[i], tonumber(ts) or 0})
    end
    table.sort(entries, function(a, b)
      if a[2] ~= b[2] then return a[2] < b[2] end
      return a[1] < b[1]
    end)
    for i = 1, len - cap do redis.call('HDEL', key, entries[i][1]) end
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
if newest then
  local lkey = KEYS[2 + h + m]
  local size = tonumber(ARGV[10])
  local bound = tonumber(ARGV[15])
  for j = 0, nw - 1 do
    local name = ARGV[16 + 2 * j]
    local win = tonumber(ARGV[17 + 2 * j])
    local zkey = KEYS[3 + h + m + j]
    local landmark = tonumber(redis.call('HGET', lkey, name) or '')
    if not landmark or (newest - landmark) / win > bound then
      if landmark and redis.call('EXISTS', zkey) == 1 then
        local factor = string.format('%.17g', math.exp((landmark - newest) / win))
        redis.call('ZUNIONSTORE', zkey, 1, zkey, 'WEIGHTS', factor)
      end
      landmark = newest
      redis.call('HSET', lkey, name, string.format('%.0f', landmark))
    end
    local inc = {}
    for _, r in ipairs(ranked) do
      inc[r[1]] = (inc[r[1]] or 0) + r[2] * math.exp((r[3] - landmark) / win)
    end
    for item, v in pairs(inc) do
      redis.call('ZINCRBY', zkey, string.format('%.17g', v), item)
    end
    local card = redis.call('ZCARD', zkey)
    if card > size then redis.call('ZREMRANGEBYRANK', zkey, 0, card - size - 1) end
  end
end
local slice_last = tonumber(ARGV[8])
if slice_last > last then last = slice_last end
if last > stored then redis.call('SET', KEYS[1], string.format('%.0f', last)) end
local out = {applied, {}, {}}
for ki = 1, h do out[2][ki] = redis.call('HGETALL', KEYS[1 + ki]) end
for ni = 1, m do out[3][ni] = redis.call('SCARD', KEYS[1 + h + ni]) end
return out
